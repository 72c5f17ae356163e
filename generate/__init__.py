"""Stage 1 — the cross-modality compression pipeline that makes the distorted set (not built yet)."""
