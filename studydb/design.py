"""Study-design helpers shared by the lab app and the simulator: groups and presentation orders."""

from __future__ import annotations

import numpy as np


def order_without_repeats(
    items: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A random order of ``items`` in which no two neighbours share a reference, when possible.

    ``reference[item]`` names each item's reference image. Seeing two distortions of one picture
    back to back invites a comparison between them instead of with the reference on screen.
    Each clash is repaired by swapping in an item that fits both places; the clashes are found
    vectorized, so a long order costs Python time only for its few clashes.
    """
    order = rng.permutation(np.asarray(items))
    n = order.size
    for _ in range(20):
        clashes = np.flatnonzero(reference[order[1:]] == reference[order[:-1]]) + 1
        if clashes.size == 0:
            break
        for i in clashes:
            if reference[order[i]] != reference[order[i - 1]]:
                continue  # an earlier swap already mended it
            for j in np.concatenate([np.arange(i + 1, n), np.arange(0, i)]):
                order[[i, j]] = order[[j, i]]
                if not (_clashes_at(order, reference, i) or _clashes_at(order, reference, j)):
                    break
                order[[i, j]] = order[[j, i]]
    return order


def _clashes_at(order: np.ndarray, reference: np.ndarray, i: int) -> bool:
    """Whether position ``i`` shares its reference with a neighbour."""
    here = reference[order[i]]
    return (i > 0 and reference[order[i - 1]] == here) or (
        i + 1 < order.size and reference[order[i + 1]] == here
    )


def split_into_groups(n_items: int, group_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random partition of ``range(n_items)`` into the fewest groups of at most ``group_size``,
    as equal in size as possible (400 + 400 + 1 becomes 267 + 267 + 267, not 400 + 400 + 1)."""
    if group_size < 1:
        raise ValueError("group size must be at least 1")
    n_groups = max(1, -(-n_items // group_size))
    return [np.sort(part) for part in np.array_split(rng.permutation(n_items), n_groups)]
