"""Agreement between annotators beyond chance: Fleiss' kappa and Krippendorff's alpha (nominal)."""

from __future__ import annotations

import numpy as np


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """`counts`: items x labels, how many raters chose each label. Items need the same number of raters;
    items with fewer than two are left out.

    >>> round(fleiss_kappa(np.array([[2, 0], [0, 2], [1, 1]])), 4)
    0.3333
    """
    counts = np.asarray(counts, float)
    n = counts.sum(axis=1)
    counts = counts[n >= 2]
    if not len(counts):
        return None
    raters = counts.sum(axis=1)
    if not np.allclose(raters, raters[0]):
        raise ValueError("Fleiss' kappa needs the same number of raters per item; use Krippendorff's alpha")
    m = raters[0]
    p_items = ((counts * (counts - 1)).sum(axis=1)) / (m * (m - 1))
    p_labels = counts.sum(axis=0) / counts.sum()
    expected = (p_labels ** 2).sum()
    if expected == 1:
        return None
    return float((p_items.mean() - expected) / (1 - expected))


def krippendorff_alpha(counts: np.ndarray) -> float | None:
    """Nominal alpha from items x labels counts; items may have any number of raters (fewer than 2: left out).

    >>> round(krippendorff_alpha(np.array([[2, 0], [0, 2], [1, 1]])), 4)
    0.4444
    """
    counts = np.asarray(counts, float)
    counts = counts[counts.sum(axis=1) >= 2]
    if not len(counts):
        return None
    m = counts.sum(axis=1, keepdims=True)
    # Coincidence matrix: pairs of values within each item, weighted by 1 / (m - 1).
    coincidence = (counts[:, :, None] * counts[:, None, :] - np.einsum("ij,jk->ijk", counts, np.eye(counts.shape[1]))) / (m[:, :, None] - 1)
    o = coincidence.sum(axis=0)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    observed = o.sum() - np.trace(o)
    expected = (n_c.sum() ** 2 - (n_c ** 2).sum()) / (n - 1)
    if expected == 0:
        return None
    return float(1 - observed / expected)


def pairwise_span_f1(answers: list[dict]) -> float | None:
    """Agreement on spans as annotation studies report it: for each pair of raters, F1 of one's spans against
    the other's (symmetric: 2 |A and B| / (|A| + |B|), summed over the items both answered), averaged over the
    pairs. `answers`: per item, rater -> the set of its spans (any hashable span). None: no pair.

    >>> round(pairwise_span_f1([{"a": {1, 2}, "b": {2}}, {"a": set(), "b": {3}}]), 4)
    0.5
    """
    totals: dict[tuple, list[int]] = {}
    for item in answers:
        raters = sorted(item, key=str)
        for i, a in enumerate(raters):
            for b in raters[i + 1:]:
                both, size = totals.setdefault((a, b), [0, 0])
                totals[(a, b)] = [both + len(item[a] & item[b]), size + len(item[a]) + len(item[b])]
    scores = [2 * both / size if size else 1.0 for both, size in totals.values()]
    return float(np.mean(scores)) if scores else None
