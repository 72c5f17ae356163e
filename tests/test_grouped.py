"""The vectorized per-group statistics equal their scipy/numpy per-group definitions."""

import numpy as np
import pytest
from scipy import stats

from mos import grouped


def per_group(groups, n_groups, fn, *arrays):
    return np.array([fn(*(a[groups == g] for a in arrays)) for g in range(n_groups)])


@pytest.mark.parametrize(
    "n_groups, n, distinct",
    [
        (5, 400, 6),  # few distinct values: histogram path
        (40, 2000, 10_000),  # many distinct values, balanced groups: padded sort path
        (400, 500, 10_000),  # many groups, few rows each
    ],
)
def test_rank_matches_scipy_rankdata_within_each_group(n_groups, n, distinct):
    rng = np.random.default_rng(n_groups)
    groups = rng.integers(0, n_groups, n)
    values = rng.integers(0, distinct, n) / 7.0
    ranks = grouped.rank(groups, values, n_groups)
    for g in range(n_groups):
        member = groups == g
        np.testing.assert_allclose(ranks[member], stats.rankdata(values[member]))


def test_rank_unbalanced_groups_use_global_sort_and_agree():
    rng = np.random.default_rng(1)
    groups = np.concatenate([np.zeros(3000, int), rng.integers(1, 50, 200)])
    values = rng.normal(size=groups.size).round(2)
    blocks = grouped.Blocks(groups, 50)
    assert not blocks.padded
    ranks = grouped.rank(groups, values, 50, blocks)
    for g in range(50):
        np.testing.assert_allclose(ranks[groups == g], stats.rankdata(values[groups == g]))


def test_spearman_matches_scipy_and_is_nan_for_constant_groups():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 30, 3000)
    x = rng.integers(0, 6, groups.size).astype(float)
    y = x + rng.normal(0, 2, groups.size)
    x[groups == 7] = 3.0  # a viewer who always answers 3
    got = grouped.spearman(groups, x, y, 30)
    for g in range(30):
        if g == 7:
            assert np.isnan(got[g])
        else:
            assert got[g] == pytest.approx(stats.spearmanr(x[groups == g], y[groups == g])[0])


@pytest.mark.parametrize(
    "kind",
    ["float", "few codes", "many codes"],  # argsort rows, histogram, packed sort
)
def test_block_ranks_and_correlation_equal_the_long_form_exactly(kind):
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 25, 4000)  # unequal group sizes: padding in every row but one
    groups[groups == 9] = 10  # and one group with no rows at all
    x = rng.integers(0, 6, groups.size).astype(float)
    x[groups == 7] = 3.0  # constant: undefined correlation
    if kind == "float":
        y = x + rng.normal(0, 2, groups.size).round(1)
    else:
        y = rng.integers(0, 5 if kind == "few codes" else 100_000, groups.size)
    blocks = grouped.Blocks(groups, 25)
    assert blocks.padded
    x_codes, _ = grouped.ordered_codes(x)
    x_ranks = grouped.block_ranks(blocks, x_codes)
    y_ranks = grouped.block_ranks(blocks, y)
    for g in range(25):
        row = blocks.size[g]
        np.testing.assert_array_equal(y_ranks[g, :row], stats.rankdata(y[groups == g]))
        np.testing.assert_array_equal(y_ranks[g, row:], (row + 1) / 2)  # padding: the centre
    got = grouped.block_rank_correlation(x_ranks, y_ranks, blocks.size)
    long_form = grouped.spearman(groups, x, y.astype(float), 25)
    np.testing.assert_array_equal(got, long_form)  # bit for bit, NaN where undefined
    assert np.isnan(got[7]) and np.isnan(got[9])


def test_mean_std_and_counts_match_numpy():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 10, 500)
    values = rng.normal(3, 1, 500)
    np.testing.assert_allclose(
        grouped.mean(groups, values, 10), per_group(groups, 10, np.mean, values)
    )
    np.testing.assert_allclose(
        grouped.std(groups, values, 10), per_group(groups, 10, lambda v: np.std(v, ddof=1), values)
    )
    single = grouped.std(np.array([0, 1, 1]), np.array([1.0, 2.0, 4.0]), 2)
    assert np.isnan(single[0])  # a one-row group has no sample std
    assert single[1] == pytest.approx(np.sqrt(2.0))


@pytest.mark.parametrize("span_cells", [1, 800, 1 << 18])  # a group per span, a few, all
@pytest.mark.parametrize("kind", ["float", "few codes", "many codes"])
def test_spans_of_groups_give_the_whole_matrix_ranks_and_correlations(
    monkeypatch, span_cells, kind
):
    """Ranks and correlations are computed a span of groups at a time (less memory, in cache):
    the same, bit for bit, whatever the span."""
    rng = np.random.default_rng(6)
    groups = rng.integers(0, 30, 5000)
    groups[groups == 4] = 5  # a group with no rows
    x = rng.integers(0, 6, groups.size).astype(float)
    if kind == "float":
        y = x + rng.normal(0, 2, groups.size).round(1)
    else:
        y = rng.integers(0, 5 if kind == "few codes" else 100_000, groups.size)
    monkeypatch.setattr(grouped, "SPAN_CELLS", span_cells)
    blocks = grouped.Blocks(groups, 30)
    assert len(blocks.spans()) == {1: 30, 800: 15, 1 << 18: 1}[span_cells]
    x_ranks = grouped.block_ranks(blocks, grouped.ordered_codes(x)[0])
    got = grouped.block_spearman(blocks, x_ranks, lambda rows: y[rows])
    np.testing.assert_array_equal(got, grouped.spearman(groups, x, y.astype(float), 30))
    for g in (0, 17, 29):
        row = blocks.size[g]
        np.testing.assert_array_equal(x_ranks[g, :row], stats.rankdata(x[groups == g]))


@pytest.mark.parametrize("span_cells", [1, 1 << 18])
@pytest.mark.parametrize("repeated_by", [None, 0, 19])  # nobody, the first viewer, the last
def test_repeated_ratings_are_found_in_any_span(monkeypatch, span_cells, repeated_by):
    from mos.observations import Pairs

    rng = np.random.default_rng(8)
    viewer = np.repeat(np.arange(20), 30)
    stimulus = np.concatenate([rng.permutation(100)[:30] for _ in range(20)])
    if repeated_by is not None:
        rows = np.flatnonzero(viewer == repeated_by)
        stimulus[rows[-1]] = stimulus[rows[0]]  # rated twice
    monkeypatch.setattr(grouped, "SPAN_CELLS", span_cells)
    pairs = Pairs.find(viewer, stimulus, 100, grouped.Blocks(viewer, 20))
    assert (pairs is None) == (repeated_by is None)
    if pairs is not None:
        assert pairs.repetitions == 2 and pairs.viewer.size == viewer.size - 1


@pytest.mark.parametrize("n_groups", [3, 300, 70_000])  # 70,000: beyond 16-bit codes
def test_viewer_blocks_order_the_rows_as_a_stable_sort(n_groups):
    """The rows are sorted by a radix sort of 16-bit codes (on a second core) where the groups
    fit; the order and layout must be a stable sort's, whatever the group count."""
    rng = np.random.default_rng(n_groups)
    groups = rng.integers(0, n_groups, 50_000)
    blocks = grouped.Blocks(groups, n_groups)
    order = np.argsort(groups, kind="stable")
    np.testing.assert_array_equal(blocks.order, order)
    np.testing.assert_array_equal(blocks.size, np.bincount(groups, minlength=n_groups))
    if blocks.padded:
        matrix = blocks.matrix(np.arange(groups.size), fill=-1)
        np.testing.assert_array_equal(blocks.unmatrix(matrix), np.arange(groups.size))
