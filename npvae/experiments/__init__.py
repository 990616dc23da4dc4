"""What the project runs about npvae rather than what a user builds with it: the
benchmark against PyTorch (:mod:`.benchmark`; its cases in :mod:`.synthetic_cases`,
:mod:`.pipeline_cases` and :mod:`.separation_bench`; the PyTorch twins in
:mod:`.torch_twin` and :mod:`.torch_pipelines`; per-layer timing in :mod:`.layer_bench`),
the loss studies with their baselines (:mod:`.studies`, :mod:`.study_table`) and the
report built from results files (:mod:`.report`, :mod:`.document`). The core library
never imports it; the scripts ``bench.py``, ``compare_losses.py`` and ``make_report.py`` do.
"""
