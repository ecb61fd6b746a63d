"""numba kernel of the 3-objective non-dominated sweep (imported lazily by solver.pareto)."""
import numba
import numpy as np


@numba.njit(cache=True)
def sweep3(rank, z, r, dom):  # pragma: no cover - compiled
    """Rows in lexicographic order, distinct: row j is dominated iff an earlier row has a second
    objective rank <= rank[j] and a third objective rank <= z[j] (Fenwick tree of prefix
    minima; ranks, so that an empty prefix never compares equal to an infinite objective)."""
    big = np.iinfo(np.int64).max
    tree = np.full(r + 1, big, dtype=np.int64)
    for j in range(len(rank)):
        q = rank[j] + 1
        best = big
        while q > 0:
            if tree[q] < best:
                best = tree[q]
            q -= q & -q
        if best <= z[j]:
            dom[j] = True
        q = rank[j] + 1
        while q <= r:
            if z[j] < tree[q]:
                tree[q] = z[j]
            q += q & -q
