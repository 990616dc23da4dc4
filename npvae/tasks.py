"""The kinds of training run, by name: what ``npvae train <name>`` and
``npvae.train(name, settings)`` accept.

========== ===================================================== ==========================
name       what it learns                                        task
========== ===================================================== ==========================
mnist      Part I: digit + fashion mixtures -> both images       :class:`~npvae.pipelines.mnist.MnistTask`
music      Part II: voice and accompaniment from spectrograms    :class:`~npvae.pipelines.music.MusicTask`
blind-mnist Part I from mixtures alone                           :class:`~npvae.pipelines.blind_mnist.BlindMnistTask`
blind-music Part II from mixtures alone                          :class:`~npvae.pipelines.blind_music.BlindMusicTask`
========== ===================================================== ==========================
"""
from __future__ import annotations

from .pipelines.blind_mnist import BlindMnistTask
from .pipelines.blind_music import BlindMusicTask
from .pipelines.mnist import MnistTask
from .pipelines.music import MusicTask

TASKS = {task.name: task for task in (MnistTask, MusicTask, BlindMnistTask, BlindMusicTask)}

__all__ = ["TASKS"]
