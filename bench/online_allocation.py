"""Uniform against adaptive allocation on a simulated online study of the paper's 4,000 images.

Runs ``python -m mos.online_study`` with per-image score spreads resampled from sureal's public
data sets (``../shared/data/sureal``) and the target set to the median 95% CI of a simulated
20-viewer lab study of the same images; writes ``bench/out/online_allocation.csv``. About a
minute on 2 cores. Extra arguments are passed on (e.g. ``--seed 1``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mos.online_study import main

ROOT = Path(__file__).resolve().parent.parent
SUREAL = ROOT.parent / "shared" / "data" / "sureal"
SETS = (
    "NFLX_dataset_public_raw.csv",
    "VQEGHD3_dataset_raw.csv",
    "quality_variation_2017_agh_tv.csv",
)

if __name__ == "__main__":
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    spreads = [str(SUREAL / name) for name in SETS if (SUREAL / name).exists()]
    argv = ["--stimuli", "4000", "--csv", str(ROOT / "bench" / "out" / "online_allocation.csv")]
    if spreads:
        argv += ["--spreads", *spreads]
    sys.exit(main(argv + sys.argv[1:]))
