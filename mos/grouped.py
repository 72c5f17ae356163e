"""Vectorized per-group statistics over long (one row per rating) integer-coded arrays.

The paper's steps are all "per viewer" or "per stimulus" reductions. Looping over 25,000 crowd
viewers with ``scipy.stats.spearmanr`` or a pandas ``groupby`` costs seconds to minutes at 10 M
ratings, so these helpers do each reduction in one pass with ``np.bincount`` and one sort. Every
function is checked against its scipy/numpy per-group equivalent in ``tests/test_grouped.py``.

Conventions: ``groups`` holds integer codes in ``[0, n_groups)``; a group with too few members for
a statistic gets NaN rather than an error, and callers decide what NaN means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def counts(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """How many rows each group has."""
    return np.bincount(groups, minlength=n_groups)


def mean(
    groups: np.ndarray, values: np.ndarray, n_groups: int, n: np.ndarray | None = None
) -> np.ndarray:
    """Mean of ``values`` per group (NaN for an empty group); ``n`` = :func:`counts` if known."""
    total = np.bincount(groups, weights=values, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / (counts(groups, n_groups) if n is None else n)


def std(
    groups: np.ndarray,
    values: np.ndarray,
    n_groups: int,
    ddof: int = 1,
    n: np.ndarray | None = None,
) -> np.ndarray:
    """Standard deviation per group, two-pass for accuracy (NaN where a group has ≤ ddof rows)."""
    n = counts(groups, n_groups) if n is None else n
    centred = values - mean(groups, values, n_groups, n)[groups]
    squares = np.bincount(groups, weights=centred * centred, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > ddof, np.sqrt(squares / (n - ddof)), np.nan)


class Blocks:
    """The rows of each group laid side by side, computed once and shared by every rank call.

    Sorting many short rows of a padded (group × longest group) matrix is several times faster than
    one global sort of the same data, because each short sort stays in cache. Balanced designs (every
    viewer rates a few hundred images) are the rule in a study, so the padding is small; a very
    unbalanced grouping falls back to one global sort.
    """

    def __init__(self, groups: np.ndarray, n_groups: int) -> None:
        self.n_groups = n_groups
        self.n_rows = groups.shape[0]
        self.order = np.argsort(groups, kind="stable")
        self.size = counts(groups, n_groups)
        self.width = int(self.size.max()) if n_groups and self.n_rows else 0
        if self.padded:
            starts = np.concatenate(([0], np.cumsum(self.size)[:-1]))
            sorted_groups = groups[self.order]
            # flat index of each (group-sorted) row in the padded group × width matrix
            self.cell = sorted_groups * self.width + (
                np.arange(self.n_rows) - starts[sorted_groups]
            )

    @property
    def padded(self) -> bool:
        """Whether the padded layout is worth it (at most 3× the data)."""
        return self.n_groups * self.width <= 3 * max(1, self.n_rows)

    def matrix(self, values: np.ndarray, fill) -> np.ndarray:
        """``values`` laid out as the padded group × width matrix, ``fill`` in the gaps."""
        flat = np.full(self.n_groups * self.width, fill, dtype=values.dtype)
        flat[self.cell] = values[self.order]
        return flat.reshape(self.n_groups, self.width)

    def unmatrix(self, matrix: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`matrix`: back to one value per row, in the rows' order."""
        out = np.empty(self.n_rows, dtype=matrix.dtype)
        out[self.order] = matrix.ravel()[self.cell]
        return out


def rank(
    groups: np.ndarray, values: np.ndarray, n_groups: int, blocks: Blocks | None = None
) -> np.ndarray:
    """Ranks of ``values`` within each group, ties averaged (``scipy.stats.rankdata`` 'average').

    Values are first replaced by dense codes (hash-based ``pandas.factorize``, then a sort of the
    distinct values only).
    """
    codes, uniques = pd.factorize(values)
    order_of_unique = np.empty(len(uniques), dtype=np.int64)
    order_of_unique[np.argsort(uniques)] = np.arange(len(uniques))
    return rank_codes(groups, order_of_unique[codes], len(uniques), n_groups, blocks)


def rank_codes(
    groups: np.ndarray,
    codes: np.ndarray,
    n_codes: int,
    n_groups: int,
    blocks: Blocks | None = None,
) -> np.ndarray:
    """Within-group average ranks of dense, order-preserving integer ``codes`` in ``[0, n_codes)``.

    Few distinct codes (opinion scores on a slider grid): a group × code histogram, O(n), no sort.
    Many (per-stimulus means): a sort within each group, see :class:`Blocks`.
    """
    n = codes.shape[0]
    if n == 0:
        return np.empty(0)
    if n_groups * n_codes <= 4 * n:
        key = groups * n_codes + codes
        tally = np.bincount(key, minlength=n_groups * n_codes).reshape(n_groups, n_codes)
        below = np.cumsum(tally, axis=1) - tally
        return (below + (tally + 1) / 2.0).ravel()[key]
    blocks = blocks if blocks is not None else Blocks(groups, n_groups)
    if not blocks.padded:
        return _rank_sorted(groups.astype(np.int64) * n_codes + codes, groups)
    width = blocks.width
    matrix = blocks.matrix(codes.astype(np.int64, copy=False), fill=n_codes)  # padding sorts last
    within = np.argsort(matrix, axis=1)
    matrix = np.take_along_axis(matrix, within, axis=1)
    matrix += (np.arange(n_groups, dtype=np.int64) * (n_codes + 1))[:, None]
    sorted_ranks = _average_ranks(matrix.ravel()).reshape(n_groups, width)
    del matrix
    sorted_ranks -= (np.arange(n_groups) * width)[:, None]
    ranks = np.empty((n_groups, width))
    np.put_along_axis(ranks, within, sorted_ranks, axis=1)
    return blocks.unmatrix(ranks)


def _rank_sorted(key: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Within-group ranks by one global sort of the combined (group, code) key."""
    order = np.argsort(key)
    sorted_groups = groups[order]
    n = key.shape[0]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(sorted_groups[1:], sorted_groups[:-1], out=new_group[1:])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    ranks = np.empty(n)
    ranks[order] = _average_ranks(key[order]) - group_start
    return ranks


def _average_ranks(sorted_key: np.ndarray) -> np.ndarray:
    """1-based positions in an ascending array, equal keys sharing their mean position."""
    n = sorted_key.shape[0]
    new_tie = np.empty(n, dtype=bool)
    new_tie[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=new_tie[1:])
    run_first = np.flatnonzero(new_tie)
    del new_tie
    run_length = np.diff(run_first, append=n)
    return np.repeat(run_first + (run_length + 1) / 2.0, run_length)


def pearson(
    groups: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    n_groups: int,
    n: np.ndarray | None = None,
    *,
    ranks: bool = False,
) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` within each group (NaN if either is constant).

    With ``ranks=True`` both are within-group ranks, whose group mean is known to be (n + 1) / 2.
    """
    n = counts(groups, n_groups) if n is None else n
    if ranks:
        centre = (n + 1) / 2.0
        dx, dy = x - centre[groups], y - centre[groups]
    else:
        dx = x - mean(groups, x, n_groups, n)[groups]
        dy = y - mean(groups, y, n_groups, n)[groups]
    sxy = np.bincount(groups, weights=dx * dy, minlength=n_groups)
    sxx = np.bincount(groups, weights=dx * dx, minlength=n_groups)
    syy = np.bincount(groups, weights=dy * dy, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    # Sums of squares that are zero up to rounding mean a constant series: undefined, not ±1.
    tiny = 1e-12 * np.maximum(1.0, n)
    r[(sxx <= tiny) | (syy <= tiny)] = np.nan
    return np.clip(r, -1.0, 1.0)


def spearman(
    groups: np.ndarray, x: np.ndarray, y: np.ndarray, n_groups: int, blocks: Blocks | None = None
) -> np.ndarray:
    """Spearman rank-order correlation (SRoCC) of ``x`` and ``y`` within each group."""
    rx = rank(groups, x, n_groups, blocks)
    return pearson(groups, rx, rank(groups, y, n_groups, blocks), n_groups, ranks=True)
