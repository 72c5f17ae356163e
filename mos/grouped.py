"""Vectorized per-group statistics over long (one row per rating) integer-coded arrays.

The paper's steps are all "per viewer" or "per stimulus" reductions. Looping over 25,000 crowd
viewers with ``scipy.stats.spearmanr`` or a pandas ``groupby`` costs seconds to minutes at 10 M
ratings, so these helpers do each reduction in one pass with ``np.bincount`` and one sort. Every
function is checked against its scipy/numpy per-group equivalent in ``tests/test_grouped.py``.

Conventions: ``groups`` holds integer codes in ``[0, n_groups)``; a group with too few members for
a statistic gets NaN rather than an error, and callers decide what NaN means.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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
    return centred_std(groups, values, n_groups, ddof, n)[1]


def centred_std(
    groups: np.ndarray,
    values: np.ndarray,
    n_groups: int,
    ddof: int = 1,
    n: np.ndarray | None = None,
    means: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each value minus its group's mean, and :func:`std`: the centred values are the first pass
    of the standard deviation and what z-scoring divides, computed once for both. ``means``:
    the groups' :func:`mean`, when the caller has it."""
    n = counts(groups, n_groups) if n is None else n
    centred = (mean(groups, values, n_groups, n) if means is None else means)[groups]
    np.subtract(values, centred, out=centred)
    squares = np.bincount(groups, weights=centred * centred, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return centred, np.where(n > ddof, np.sqrt(squares / (n - ddof)), np.nan)


SPAN_CELLS = 1 << 18
"""Padded cells handled at once by the span-wise statistics (:meth:`Blocks.spans`): a span's
float matrix is 2 MB, within the L2 cache and below glibc's mapping threshold."""


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
        # The sort (numpy's leaves the interpreter free) on a second core while the layout,
        # which needs only the groups' sizes, is computed here.
        with ThreadPoolExecutor(1) as pool:
            order = pool.submit(np.argsort, _narrowest(groups, n_groups), kind="stable")
            self.size = counts(groups, n_groups)
            self.start = np.concatenate(([0], np.cumsum(self.size)))
            """Where each group's rows begin in :attr:`order` (and where the last ends)."""
            self.width = int(self.size.max()) if n_groups and self.n_rows else 0
            if self.padded:
                # flat index of each (group-sorted) row in the padded group × width matrix: the
                # g-th group's i-th row (i counted over all sorted rows) is at g · width + i − start
                shift = np.arange(n_groups, dtype=np.int64) * self.width - self.start[:-1]
                self.cell = np.repeat(shift, self.size) + np.arange(self.n_rows)
            self.order = order.result()

    @property
    def padded(self) -> bool:
        """Whether the padded layout is worth it (at most 3× the data)."""
        return self.n_groups * self.width <= 3 * max(1, self.n_rows)

    def matrix(self, values: np.ndarray, fill) -> np.ndarray:
        """``values`` laid out as the padded group × width matrix, ``fill`` in the gaps."""
        return self.span_matrix((0, self.n_groups), values[self.order], fill)

    def spans(self) -> list[tuple[int, int]]:
        """Consecutive groups ``[g0, g1)`` of about :data:`SPAN_CELLS` padded cells each.

        Ranks and rank correlations are computed one span at a time: each span's arrays stay
        in the cache and small enough for the allocator to reuse. Whole-matrix temporaries
        (80 MB each at ten million ratings) cost more in page faults than in arithmetic."""
        step = max(1, SPAN_CELLS // max(self.width, 1))
        return [(g, min(g + step, self.n_groups)) for g in range(0, self.n_groups, step)]

    def rows(self, span: tuple[int, int]) -> np.ndarray:
        """The rows of the span's groups, group after group, each group's in their own order."""
        return self.order[self.start[span[0]] : self.start[span[1]]]

    def span_matrix(self, span: tuple[int, int], values: np.ndarray, fill) -> np.ndarray:
        """``values`` (one per row of :meth:`rows`, in that order) laid out as the span's rows of
        the padded matrix, ``fill`` in the gaps."""
        g0, g1 = span
        flat = np.full((g1 - g0) * self.width, fill, dtype=values.dtype)
        flat[self.cell[self.start[g0] : self.start[g1]] - g0 * self.width] = values
        return flat.reshape(g1 - g0, self.width)

    def unmatrix(self, matrix: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`matrix`: back to one value per row, in the rows' order."""
        out = np.empty(self.n_rows, dtype=matrix.dtype)
        out[self.order] = matrix.ravel()[self.cell]
        return out


def _narrowest(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """``groups`` as 16-bit codes where they fit: numpy sorts those stably by radix, in one
    pass (0.15 s for ten million, against 0.3 s for a merge sort of 64-bit codes), in the same
    order."""
    return groups.astype(np.uint16) if n_groups <= 1 << 16 else groups


def rank(
    groups: np.ndarray, values: np.ndarray, n_groups: int, blocks: Blocks | None = None
) -> np.ndarray:
    """Ranks of ``values`` within each group, ties averaged (``scipy.stats.rankdata`` 'average').

    Values are first replaced by dense codes (hash-based ``pandas.factorize``, then a sort of the
    distinct values only).
    """
    codes, n_codes = ordered_codes(values)
    return rank_codes(groups, codes, n_codes, n_groups, blocks)


def ordered_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense codes in ``[0, k)`` that keep the values' order (ties share a code), and k."""
    codes, uniques = pd.factorize(values)
    order_of_unique = np.empty(len(uniques), dtype=np.int64)
    order_of_unique[np.argsort(uniques)] = np.arange(len(uniques))
    return order_of_unique[codes], len(uniques)


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
    return _correlation(sxy, sxx, syy, n)


def _correlation(sxy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Pearson's r from centred sums of products; NaN where either series is constant."""
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


def block_ranks(blocks: Blocks, values: np.ndarray) -> np.ndarray:
    """Within-group average ranks of ``values`` (one per row), as the padded group × width matrix
    of ``blocks``, computed span by span (:func:`span_ranks`).

    Ranks stay in this layout so that one ranking serves several correlations (the paper's SRoCC
    and the leave-one-out one share a viewer's own ranks, :func:`block_spearman`) without a
    scatter and a gather of the whole data for each.
    """
    ranks = np.empty((blocks.n_groups, blocks.width))
    for span in blocks.spans():
        ranks[span[0] : span[1]] = span_ranks(blocks, span, values[blocks.rows(span)])
    return ranks


def block_spearman(blocks: Blocks, x_ranks: np.ndarray, values_of) -> np.ndarray:
    """Per-group SRoCC between the groups' :func:`block_ranks` ``x_ranks`` and the values
    ``values_of(rows)`` gives for rows (an index array, :meth:`Blocks.rows`) — computed span by
    span, so that the values, their ranks and the centred sums never exist for all rows at once.
    """
    r = np.empty(blocks.n_groups)
    for g0, g1 in blocks.spans():
        y_ranks = span_ranks(blocks, (g0, g1), values_of(blocks.rows((g0, g1))))
        r[g0:g1] = block_rank_correlation(x_ranks[g0:g1], y_ranks, blocks.size[g0:g1])
    return r


def span_ranks(blocks: Blocks, span: tuple[int, int], values: np.ndarray) -> np.ndarray:
    """Within-group average ranks of ``values`` (one per row of ``blocks.rows(span)``), as the
    span's rows of the padded matrix.

    The padding cells hold their group's mean rank, (n + 1) / 2, so that they add nothing to
    centred sums (:func:`block_rank_correlation`). Non-negative integer codes are ranked from a
    group × code histogram when there are few codes (opinion scores), else by a plain sort of one
    packed ``code · width + column`` key; floats by an argsort of each row.
    """
    size = blocks.size[span[0] : span[1]]
    codes = np.issubdtype(values.dtype, np.integer) and values.min(initial=0) >= 0
    top = int(values.max(initial=0)) + 1 if codes else 0
    if codes and size.size * (top + 1) <= max(1, values.size):
        key = blocks.span_matrix(span, values.astype(np.int64, copy=False), fill=top)
        ranks = _histogram_ranks(key, top)
    elif codes and top * blocks.width < 2**62:
        # int32 when the packed key fits: half the memory, and a faster sort
        dtype = np.int32 if (top + 1) * blocks.width < 2**31 else np.int64
        ranks = _code_ranks(blocks.span_matrix(span, values.astype(dtype, copy=False), fill=top))
    else:
        matrix = blocks.span_matrix(span, values.astype(np.float64, copy=False), fill=np.inf)
        ranks = _float_ranks(matrix)
    padding = np.arange(blocks.width) >= size[:, None]
    ranks[padding] = np.broadcast_to(((size + 1) / 2.0)[:, None], ranks.shape)[padding]
    return ranks


def _histogram_ranks(key: np.ndarray, top: int) -> np.ndarray:
    """Ranks of few distinct codes (below ``top``, which pads) in each row of ``key``: each code's
    rank is the count below it in its row plus half its ties."""
    n_rows, width = key.shape
    key += (np.arange(n_rows, dtype=np.int64) * (top + 1))[:, None]
    tally = np.bincount(key.ravel(), minlength=n_rows * (top + 1))
    # rank = (count below) + (tally + 1) / 2 = (2 · cumsum − tally + 1) / 2, counted from the
    # row's first cell. Exact: integers below 2**53 and their halves.
    rank_of_key = np.cumsum(tally, dtype=np.float64)
    rank_of_key *= 2
    rank_of_key -= tally
    rank_of_key += 1
    rank_of_key /= 2
    rank_of_key.reshape(n_rows, top + 1)[...] -= (np.arange(n_rows) * float(width))[:, None]
    return rank_of_key[key]


def _code_ranks(key: np.ndarray) -> np.ndarray:
    """Ranks of integer codes in each row of ``key`` (many distinct codes): the codes packed with
    their column into one key, sorted (no argsort), unpacked."""
    width = key.shape[1]
    key *= width
    key += np.arange(width, dtype=key.dtype)
    key.sort(axis=1)
    return _tied_ranks(key // width, key % width)


def _float_ranks(matrix: np.ndarray) -> np.ndarray:
    """Ranks of the floats in each row of ``matrix`` (argsort of each row)."""
    within = np.argsort(matrix, axis=1)
    return _tied_ranks(np.take_along_axis(matrix, within, axis=1), within)


def _tied_ranks(ordered: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Average ranks, ties sharing their mean position, from each row sorted (``ordered``) and
    where each sorted cell came from (``within``)."""
    n_rows, width = ordered.shape
    new_tie = np.ones(ordered.shape, dtype=bool)
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new_tie[:, 1:])
    run_first = np.flatnonzero(new_tie)
    run_length = np.diff(run_first, append=n_rows * width)
    sorted_ranks = np.repeat(run_first % max(width, 1) + (run_length + 1) / 2.0, run_length)
    ranks = np.empty((n_rows, width))
    np.put_along_axis(ranks, within, sorted_ranks.reshape(n_rows, width), axis=1)
    return ranks


def block_rank_correlation(x_ranks: np.ndarray, y_ranks: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-group Pearson r of two :func:`block_ranks` matrices of the same groups (sizes ``n``).

    Ranks are multiples of ½, so every centred sum here is exact and the result is the same,
    bit for bit, as :func:`pearson` on the same ranks in long form.
    """
    centre = ((n + 1) / 2.0)[:, None]
    dx = x_ranks - centre
    dy = y_ranks - centre
    sxy = np.einsum("ij,ij->i", dx, dy)
    sxx = np.einsum("ij,ij->i", dx, dx)
    syy = np.einsum("ij,ij->i", dy, dy)
    return _correlation(sxy, sxx, syy, n)
