"""Audio: file I/O, STFT, music datasets (MIR-1K, IRMAS, stems folders)."""
from .datasets import Track, load_tracks
from .io import read_audio, write_audio
from .stft import STFTConfig, istft, stft

__all__ = ["read_audio", "write_audio", "STFTConfig", "stft", "istft", "Track", "load_tracks"]
