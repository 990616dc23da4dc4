"""Watching a run and listening to a separation, by job:

* :mod:`.board`: TensorBoard event files of a training run (``--tensorboard``);
* :mod:`.html`: the small HTML pieces every page is made of (no script, no font or file
  from elsewhere: a page opens from disk);
* :mod:`.run_page`: a run folder's ``index.html`` (loss curves, figures, players);
* :mod:`.separation_page`: ``npvae separate --html``'s ``index.html``;
* :mod:`.browser`: headless Chromium over its DevTools pipe, to check the pages and
  take their screenshots.
"""
