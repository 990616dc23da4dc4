"""Audio: file I/O, STFT, music datasets."""
