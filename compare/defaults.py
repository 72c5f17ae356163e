"""The names and defaults the command line shows, importable without torch, pandas or pyiqa.

``python -m compare --help`` reads only this module, so it answers at once; the modules that
score and report are imported when a command runs.
"""

CURVE_BY = ("model",)
POINT_BY = ("mode", "codec_qp", "codec_target_bpp", "caption_words")
RATE_COLUMNS = ("codec_qp", "codec_target_bpp")
"""The settings that make a codec's rate points: a codec curve keeps them whatever ``point_by``."""
TABLE_A1_POINT_BY = ("codec_qp", "codec_target_bpp", "caption_words", "strength")
"""A run's row group in Table A1 (of one mode): its hint setting, caption length, strength."""
METHODS = ("pchip", "akima", "cubic")
FID_DIMS = (64, 192, 768, 2048)
PAPER_METRICS = ("topiq_fr", "clipsim", "lpips", "ssim", "topiq_nr", "clipiqa", "liqe", "fid")
OFFLINE_METRICS = ("psnr", "ssim", "gmsd")
"""Metrics without weights: they build offline (named when the default set cannot)."""
