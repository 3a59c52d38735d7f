"""Evaluation: image metrics, benchmark suites (shapes-world edits, package photos, PIE-Bench), `ptiedit bench`."""
from .metrics import compare, mean_interval, mse, psnr, ssim
from .piebench import decode_mask, encode_mask, load_piebench, strip_markers

__all__ = ["compare", "decode_mask", "encode_mask", "load_piebench", "mean_interval", "mse", "psnr", "ssim",
           "strip_markers"]
