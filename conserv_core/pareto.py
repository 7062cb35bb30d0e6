"""What a sweep says: the accuracy/conservation front and the constraint ladder.

Both read the tidy rows :mod:`conserv_core.sweeps` writes (one per trained cell: its
settings, ``status``, ``test_mse`` and per invariant ``q`` the columns ``drift_<q>``,
``drift_<q>_max``, ``drift_<q>_ood``, ``drift_<q>_ood_max``), as a pandas DataFrame.

* :func:`front` — the non-dominated runs when both the test error and the drift are to be
  small: no other run is at least as good on both and better on one. A run off the front
  is beaten on both counts by one on it.
* :func:`ladder` — the rungs from no constraint to a hard one (baseline → penalty at each
  λ → augmented Lagrangian → each hard method), each with one seed's numbers and the
  spread over every seed: what one run would have told you, and how far another seed
  could move it.

The drift used is the **largest over the horizon** (``drift_<q>_max``) unless told
otherwise: a signed error can cross zero at the last time, and a front or a claim should
not rest on that luck.
"""

from __future__ import annotations

import math

import numpy as np

from conserv_core import methods

#: the order of the rungs by the method's kind (within a kind: by λ, then by key)
KIND_ORDER = {"none": 0, "soft": 1, "mixed": 2, "hard": 3}


def drift_column(quantity: str, ood: bool = False, largest: bool = True) -> str:
    """The row column of ``quantity``'s drift (in or out of distribution; largest over the
    horizon or at its end)."""
    return f"drift_{quantity}" + ("_ood" if ood else "") + ("_max" if largest else "")


def front(x, y) -> np.ndarray:
    """Indices of the non-dominated points when both ``x`` and ``y`` are minimised, in
    increasing ``x`` (so decreasing ``y``). Points with a non-finite coordinate are never
    on it. Ties: of equal points, the first one stands for them.

    >>> front([1, 2, 3, 0.5], [3, 1, 2, 4]).tolist()
    [3, 0, 1]
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape; got {x.shape} and {y.shape}")
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = ok[np.lexsort((y[ok], x[ok]))]  # by x, then y
    keep, best = [], math.inf
    for i in order:
        if y[i] < best:
            keep.append(i)
            best = y[i]
    return np.asarray(keep, dtype=int)


def _reads_lam(method: str) -> bool:
    m = methods.ALL_METHODS.get(method)
    return m is not None and "lam" in getattr(m, "reads", ("lam",) if m.constraint else ())


def rung(method: str, lam=None) -> str:
    """The label of a ladder rung: the method, with its λ where it reads one."""
    if lam is None or (isinstance(lam, float) and math.isnan(lam)):
        return method
    return f"{method} λ={lam:g}"


def ladder(rows, quantity: str, seed: int | None = None, ood: bool = False, largest: bool = True):
    """The constraint ladder of a sweep's finished rows for ``quantity``.

    Args:
        rows: the sweep's rows (a DataFrame).
        quantity: an invariant the rows have drift columns for (``energy``, ``mass``, …).
        seed: the seed whose numbers each rung shows (None: the smallest seed present).
        ood: drift out of distribution instead of in it.
        largest: the largest drift over the horizon (default) or the drift at its end.

    Returns:
        A DataFrame, one row per rung from no constraint to hard: ``rung``, ``method``,
        ``kind``, ``lam``, ``seed``, the chosen seed's ``test_mse`` and ``drift``, and over
        every seed ``n_seeds``, ``test_mse_min``/``_median``/``_max`` and
        ``drift_min``/``_median``/``_max``. Only rows with status ``done`` count.
    """
    import pandas as pd

    col = drift_column(quantity, ood, largest)
    if col not in rows.columns:
        have = sorted({c[len("drift_"):].removesuffix("_max").removesuffix("_ood")
                       for c in rows.columns if c.startswith("drift_")})
        raise KeyError(f"the rows have no drift of {quantity!r}; they have {', '.join(have) or 'none'}")
    done = rows[rows["status"] == "done"] if "status" in rows.columns else rows
    if done.empty:
        return pd.DataFrame(columns=["rung", "method", "kind", "lam", "seed", "test_mse", "drift", "n_seeds",
                                     "test_mse_min", "test_mse_median", "test_mse_max",
                                     "drift_min", "drift_median", "drift_max"])
    lam = done["lam"] if "lam" in done.columns else pd.Series(np.nan, index=done.index)
    # a method that reads no λ is one rung, whatever λ its rows carry
    lam = lam.where(done["method"].map(_reads_lam), np.nan)
    pick = int(done["seed"].min()) if seed is None else int(seed)
    out = []
    for (method, lam_value), grp in done.assign(_lam=lam).groupby(["method", "_lam"], dropna=False, sort=False):
        lam_value = None if pd.isna(lam_value) else float(lam_value)
        mine = grp[grp["seed"] == pick]
        kind = methods.ALL_METHODS[method].kind if method in methods.ALL_METHODS else "hard"
        err, drift = grp["test_mse"].astype(float), grp[col].astype(float)
        out.append({
            "rung": rung(method, lam_value), "method": method, "kind": kind, "lam": lam_value, "seed": pick,
            "test_mse": float(mine["test_mse"].iloc[0]) if len(mine) else math.nan,
            "drift": float(mine[col].iloc[0]) if len(mine) else math.nan,
            "n_seeds": int(grp["seed"].nunique()),
            "test_mse_min": err.min(), "test_mse_median": err.median(), "test_mse_max": err.max(),
            "drift_min": drift.min(), "drift_median": drift.median(), "drift_max": drift.max(),
        })
    table = pd.DataFrame(out)
    table["_order"] = table["kind"].map(KIND_ORDER).fillna(len(KIND_ORDER))
    table["_lam"] = table["lam"].fillna(-math.inf)
    return (table.sort_values(["_order", "_lam", "method"], kind="stable")
            .drop(columns=["_order", "_lam"]).reset_index(drop=True))


__all__ = ["KIND_ORDER", "drift_column", "front", "ladder", "rung"]
