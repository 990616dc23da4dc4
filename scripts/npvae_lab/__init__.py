"""The lab: what the project runs about npvae rather than what a user builds with it.

It lives beside the scripts of a source checkout and is not installed. The ``npvae
report``, ``npvae study`` and ``npvae bench`` commands find it there
(:mod:`npvae.cli.lab`); the library never imports it.

* the benchmark against PyTorch (:mod:`.benchmark`; its cases in :mod:`.synthetic_cases`,
  :mod:`.pipeline_cases` and :mod:`.separation_bench`; the PyTorch twins in
  :mod:`.torch_twin` and :mod:`.torch_pipelines`; per-layer timing in :mod:`.layer_bench`;
  several runs summarised in :mod:`.bench_summary`);
* the loss studies with their baselines (:mod:`.studies`, :mod:`.study_table`);
* the report built from results files (:mod:`.report`, :mod:`.document`,
  :mod:`.report_shipped`, :mod:`.blind_report`).
"""
