"""The benchmark: npvae timed against PyTorch, development tooling rather than product.

It lives beside the scripts of a source checkout and is not installed; ``npvae bench``
finds it there (:mod:`npvae.cli.lab`); the library never imports it. The loss studies
and the report are installed (:mod:`npvae.lab`).

* the benchmark against PyTorch (:mod:`.benchmark`; its cases in :mod:`.synthetic_cases`,
  :mod:`.pipeline_cases` and :mod:`.separation_bench`; the PyTorch twins in
  :mod:`.torch_twin` and :mod:`.torch_pipelines`; per-layer timing in :mod:`.layer_bench`;
  several runs summarised in :mod:`.bench_summary`);
"""
