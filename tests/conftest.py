"""Shared fixtures: the public data sets beside the checkout, and sureal dataset adapters."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pandas as pd
import pytest

SHARED = Path(os.environ.get("CMC_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SUREAL_DATA = SHARED / "data" / "sureal"


@pytest.fixture(scope="session")
def sureal_data() -> Path:
    if not SUREAL_DATA.is_dir():
        pytest.skip(f"public sureal data sets not found at {SUREAL_DATA} (set CMC_SHARED)")
    return SUREAL_DATA


def sureal_dataset(csv: Path) -> tuple[types.SimpleNamespace, list[str]]:
    """Turn one of the long CSVs back into the dataset object sureal's readers take."""
    frame = pd.read_csv(csv, dtype={"viewer": str})
    contents = list(dict.fromkeys(frame["content"]))
    content_id = {name: i for i, name in enumerate(contents)}
    dataset = types.SimpleNamespace(
        ref_videos=[
            {"content_id": i, "content_name": c, "path": c} for i, c in enumerate(contents)
        ],
        dis_videos=[],
    )
    stimuli = []
    for asset_id, (stimulus, rows) in enumerate(frame.groupby("stimulus", sort=False)):
        scores: dict[str, list[float]] = {}
        for viewer, score in zip(rows["viewer"], rows["score"], strict=True):
            scores.setdefault(viewer, []).append(float(score))
        dataset.dis_videos.append(
            {
                "content_id": content_id[rows["content"].iloc[0]],
                "asset_id": asset_id,
                "path": stimulus,
                "os": {v: (s[0] if len(s) == 1 else s) for v, s in scores.items()},
            }
        )
        stimuli.append(stimulus)
    return dataset, stimuli


@pytest.fixture(scope="session", autouse=True)
def _score_cache(tmp_path_factory):
    """train_iqa's score cache in a temporary file, never the user's ~/.cache."""
    os.environ["CMC_SCORE_CACHE"] = str(tmp_path_factory.mktemp("cache") / "scores.sqlite")
