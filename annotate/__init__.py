"""Stage 2 — the Flask lab annotation app that writes the study database (not built yet)."""
