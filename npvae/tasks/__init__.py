"""The kinds of training run, by name: what ``npvae train <name>`` and
``npvae.train(name, settings)`` accept.

========== ===================================================== ==========================
name       what it learns                                        task
========== ===================================================== ==========================
mnist      images: digit + fashion mixtures -> both images       :class:`~npvae.tasks.mnist.MnistTask`
music      music: voice and accompaniment from spectrograms    :class:`~npvae.tasks.music.MusicTask`
blind-mnist images from mixtures alone                           :class:`~npvae.tasks.blind_mnist.task.BlindMnistTask`
blind-music music from mixtures alone                          :class:`~npvae.tasks.blind_music.task.BlindMusicTask`
========== ===================================================== ==========================
"""
from __future__ import annotations

from .blind_mnist.task import BlindMnistTask
from .blind_music.task import BlindMusicTask
from .mnist import MnistTask
from .music import MusicTask

TASKS = {task.name: task for task in (MnistTask, MusicTask, BlindMnistTask, BlindMusicTask)}

__all__ = ["TASKS"]
