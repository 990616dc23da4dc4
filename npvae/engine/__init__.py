"""The training engine, by job:

* :mod:`.config`: :class:`~.config.RunConfig`, the settings every run has, and the one
  flag generator for every task's config;
* :mod:`.task`: :class:`~.task.Task`, what a kind of run supplies (data, model,
  objective, scores, figures);
* :mod:`.run`: :func:`~.run.train`, the one engine for every task (also ``npvae.train``):
  the run folder, the schedules, the records;
* :mod:`.resume`: whether and how a run resumes (the folder, the checkpoint read once,
  which settings may change);
* :mod:`.loop`: :class:`~.loop.Trainer`, the epochs, MPI steps and checkpoints, and the
  restore of a checkpoint's state;
* :mod:`.checkpoint`: the atomic, checked checkpoint file; :mod:`.memory`: whether a
  model fits in the machine's memory.

The tasks themselves are :mod:`npvae.tasks`.
"""
