"""Stage 4 — fine-tuning and validating pyiqa metrics against the MOS."""
