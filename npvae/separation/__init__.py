"""Separation of songs by trained models, by job:

* :mod:`.separator`: :class:`~.separator.Separator`, a music model's inference
  (audio -> STFT -> features -> masks -> audio);
* :mod:`.blind_separator`: the same for a blind music model;
* :mod:`.audio_files`: whole audio files in and out (``npvae separate``).
"""
