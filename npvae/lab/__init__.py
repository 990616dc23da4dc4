"""The loss studies and the report: the library answering the assignment's questions.

* :mod:`.studies`: a loss study with its baselines, or a preset's ablation, each
  configuration a training run (``npvae study``); :mod:`.study_table` its table and figures;
* :mod:`.report`: report.md, .pdf and .html from results files (``npvae report``), with
  :mod:`.document` (the document model), :mod:`.doc_pdf` and :mod:`.doc_html` (typesetting),
  :mod:`.report_marks`, :mod:`.report_shipped`, :mod:`.report_sources`,
  :mod:`.report_update` and :mod:`.blind_report` (its sections).

Nothing here imports PyTorch (the benchmark, which does, stays in a source checkout's
``scripts/npvae_lab``).
"""
