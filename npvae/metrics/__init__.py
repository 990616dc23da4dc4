"""Separation quality metrics for images (MSE, PSNR, SSIM) and audio (BSS Eval, SI-SDR, GNSDR)."""
from .audio import bss_eval_sources, gnsdr, nsdr, separation_scores, si_sdr
from .image import mse, psnr, separation_report, ssim

__all__ = ["mse", "psnr", "ssim", "separation_report", "bss_eval_sources", "separation_scores", "nsdr",
           "gnsdr", "si_sdr"]
