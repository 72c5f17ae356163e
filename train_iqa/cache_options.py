"""The score cache's command-line options, in a module of their own so that a command's
``--help`` can show them without importing torch (:mod:`train_iqa.scoring` does)."""

from __future__ import annotations

from pathlib import Path

CACHE_ENV = "CMC_SCORE_CACHE"
"""Environment variable naming the cache file (default ``~/.cache/cmc-lab/scores.sqlite``)."""


def add_cache_options(parser) -> None:
    """``--cache FILE`` and ``--no-cache``, as every scoring command takes them."""
    parser.add_argument(
        "--cache", type=Path,
        help=f"score cache file (default: ${CACHE_ENV} or ~/.cache/cmc-lab/scores.sqlite)",
    )  # fmt: skip
    parser.add_argument("--no-cache", action="store_true", help="score again, store nothing")
