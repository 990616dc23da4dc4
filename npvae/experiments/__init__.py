"""What the project runs about npvae rather than what a user builds with it: the
training-step benchmark against PyTorch (:mod:`.benchmark`, :mod:`.torch_twin`), the loss
studies with their baselines (:mod:`.studies`, :mod:`.study_table`) and the report built
from results files (:mod:`.report`, :mod:`.document`). The core library never imports it;
the scripts ``bench.py``, ``compare_losses.py`` and ``make_report.py`` do.
"""
