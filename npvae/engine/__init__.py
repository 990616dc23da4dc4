"""The training engine, by job:

* :mod:`.config`: :class:`~.config.RunConfig`, the settings every run has, and the one
  flag generator for every task's config;
* :mod:`.task`: :class:`~.task.Task`, what a kind of run supplies (data, model,
  objective, scores, figures);
* :mod:`.run`: :func:`~.run.train`, the one loop for every task (also ``npvae.train``).

The tasks themselves are :mod:`npvae.tasks`.
"""
