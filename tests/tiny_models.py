"""The tests' name for :mod:`generate.tiny` (the tiny random-weight pipelines live in the package,
where ``python -m generate tiny-models`` builds them for a user's offline dry run)."""

from generate.tiny import (  # noqa: F401 — re-exported for the tests
    VOCAB_SIZE,
    save_motion_adapter,
    save_sd,
    save_sdxl,
    save_vae,
    write_tiny_models,
)
