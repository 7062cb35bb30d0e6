"""The sweep's front and ladder (``conserv_core.pareto``), against brute force and by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from conserv_core import pareto


def _dominated(i, x, y) -> bool:
    return any((x[j] <= x[i] and y[j] <= y[i]) and (x[j] < x[i] or y[j] < y[i]) for j in range(len(x)) if j != i)


@pytest.mark.parametrize("seed", range(5))
def test_the_front_is_exactly_the_non_dominated_points(seed):
    g = np.random.default_rng(seed)
    x, y = 10 ** g.uniform(-4, 0, 40), 10 ** g.uniform(-6, 0, 40)
    x[:3], y[3] = np.nan, np.inf  # never on the front
    idx = pareto.front(x, y)
    ok = np.isfinite(x) & np.isfinite(y)
    fx, fy = np.where(ok, x, np.inf), np.where(ok, y, np.inf)
    truth = [i for i in range(len(x)) if ok[i] and not _dominated(i, fx, fy)]
    assert sorted(idx.tolist()) == truth
    assert np.all(np.diff(x[idx]) > 0) and np.all(np.diff(y[idx]) < 0)  # a staircase, left to right


def test_a_front_ties_and_empty_input():
    assert pareto.front([1, 1, 2], [2, 2, 1]).tolist() == [0, 2]
    assert pareto.front([], []).tolist() == []
    with pytest.raises(ValueError, match="one shape"):
        pareto.front([1, 2], [1])


def _rows():
    rows = []
    for seed in (0, 1, 2):
        rows.append(dict(method="hnn", seed=seed, lam=np.nan, status="done", test_mse=1e-3 * (1 + seed),
                         drift_energy_max=1e-4 * (1 + seed)))
        rows.append(dict(method="baseline", seed=seed, lam=np.nan, status="done", test_mse=2e-3,
                         drift_energy_max=1e-1 * (1 + seed)))
        for lam in (10.0, 1.0):
            rows.append(dict(method="penalty", seed=seed, lam=lam, status="done", test_mse=3e-3 * lam,
                             drift_energy_max=1e-2 / lam))
    rows.append(dict(method="auglag", seed=0, lam=10.0, status="diverged", test_mse=math.nan,
                     drift_energy_max=math.nan))
    return pd.DataFrame(rows)


def test_the_ladder_climbs_from_no_constraint_to_hard_with_the_spread_over_seeds():
    table = pareto.ladder(_rows(), "energy", seed=1)
    assert table["rung"].tolist() == ["baseline", "penalty λ=1", "penalty λ=10", "hnn"]
    hnn = table.iloc[-1]
    assert hnn["seed"] == 1 and hnn["test_mse"] == pytest.approx(2e-3) and hnn["drift"] == pytest.approx(2e-4)
    assert hnn["n_seeds"] == 3
    assert (hnn["drift_min"], hnn["drift_median"], hnn["drift_max"]) == pytest.approx((1e-4, 2e-4, 3e-4))
    # the diverged auglag row is not a rung: only finished runs count
    assert "auglag" not in table["method"].tolist()


def test_a_method_that_reads_no_lambda_is_one_rung_whatever_lambda_its_rows_carry():
    rows = _rows()
    rows.loc[rows["method"] == "baseline", "lam"] = [0.1, 1.0, 10.0]
    table = pareto.ladder(rows, "energy")
    assert table["rung"].tolist().count("baseline") == 1
    assert table.loc[table["rung"] == "baseline", "n_seeds"].item() == 3


def test_the_ladder_names_the_quantities_the_rows_have():
    with pytest.raises(KeyError, match="they have energy"):
        pareto.ladder(_rows(), "mass")
