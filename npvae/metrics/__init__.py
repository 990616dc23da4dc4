"""Separation quality metrics for images (MSE, PSNR, SSIM) and audio (BSS Eval, SI-SDR, GNSDR).

One policy for every metric (:mod:`npvae.metrics.checks`): a NaN or infinite sample or
pixel is refused; so is a silent (all-zero) reference, estimate or mixture in the audio
ratio metrics (SDR, SIR, SAR, NSDR, SI-SDR), whose log ratio it leaves undefined; the
averages over clips (GNSDR, ``weighted_mean``) refuse NaN scores and take +-inf ones.
Each refusal is a ValueError naming the metric, the argument and the fix; no metric
hands back NaN. Blank images are scored like any other image.
"""
from .audio import bss_eval_sources, gnsdr, nsdr, separation_scores, si_sdr
from .image import mse, psnr, separation_report, ssim

__all__ = ["mse", "psnr", "ssim", "separation_report", "bss_eval_sources", "separation_scores", "nsdr",
           "gnsdr", "si_sdr"]
