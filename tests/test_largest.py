"""The largest error over the horizon is the number a user reads (issue 29, part 2).

A drift curve can cross zero at the horizon: on the flow, the baseline's mass drift was
4.7e-5 at the end and 2.65e-2 at its worst, the penalty's 6.1e-3 and 7.2e-3. Ranked by
the end value, the baseline looked 100× better; over the run it is 4× worse. These tests
build exactly that pair of curves and check that every place that reports a drift (the
curve's JSON, the CLI table, the finished-run sentence, the sweep row) leads with the
largest value and ranks by it.
"""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

from conserv_core import cli, metrics, records, sweeps, training
from conserv_core.systems import get_system

T = [0.0, 1.0, 2.0, 3.0]
#: the baseline crosses zero at the horizon; the penalty stays below its worst all along
BASE = metrics.Curve(T, [0.0, 0.012, 0.0265, 4.7e-5])
PEN = metrics.Curve(T, [0.0, 0.005, 0.0072, 0.0061])
TRUTH = metrics.Curve(T, [0.0, 1e-9, 2e-9, 1e-9])


def _eval(method: str, curve: metrics.Curve) -> records.Evaluation:
    return records.Evaluation(method=method, step=10, elapsed=1.0, drift={"energy": curve}, drift_ood={},
                              learned_drift={}, trajectory_error=metrics.Curve(T, [0.0, 0.5, 0.2, 0.1]),
                              test_mse=1e-3, violation=0.1, violation_ood=0.2)


def test_largest_is_the_maximum_and_a_blow_up_is_infinite():
    assert BASE.largest == 0.0265 and BASE.final == 4.7e-5
    assert metrics.Curve(T, [0.0, 0.1, float("nan"), 0.2]).largest == math.inf
    assert math.isnan(metrics.Curve([], []).largest)
    d = BASE.to_dict()
    assert d["max"] == 0.0265 and d["final"] == 4.7e-5
    assert metrics.Curve(T, [0.0, float("inf"), 1.0, 1.0]).to_dict()["max"] is None  # JSON has no inf


def test_cli_table_and_json_lead_with_the_maximum():
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum")
    rows = [training.method_summary(k, "done", "", 1.0, 10, _eval(k, c)) for k, c in (("baseline", BASE),
                                                                                        ("penalty", PEN))]
    res = training.comparison_summary(sysm, cfg, _eval("truth", TRUTH), rows)
    assert res["methods"][0]["drift"]["energy"]["max"] == 0.0265
    assert res["methods"][0]["trajectory_error"]["max"] == 0.5
    out = io.StringIO()
    cli._table(res, out)
    text = out.getvalue()
    base_row = next(line for line in text.splitlines() if line.startswith("baseline"))
    pen_row = next(line for line in text.splitlines() if line.startswith("penalty"))
    # the maximum first, the value at the horizon in brackets
    assert "2.65e-02 (4.70e-05)" in base_row and "7.20e-03 (6.10e-03)" in pen_row, text
    assert "5.00e-01 (1.00e-01)" in base_row  # trajectory error too
    assert "ranked by the max" in text


def _data(curves: dict[str, metrics.Curve]):
    sysm = get_system("pendulum")
    return SimpleNamespace(
        invariants=["energy"], system=sysm, methods=list(curves),
        latest_eval={m: _eval(m, c) for m, c in curves.items()}, truth=_eval("truth", TRUTH),
        progress={m: SimpleNamespace(elapsed=2.0) for m in curves},
        config=training.make_config("pendulum"))


def test_the_verdict_ranks_by_the_largest_drift_not_the_end_value():
    from app import verdict

    text = verdict.verdict(_data({"baseline": BASE, "penalty": PEN}))
    # ranked by the end value the baseline would win 130×; over the run the penalty is 3.7× better
    assert "drifts 4× less than the baseline" in text, text
    assert "2.6e-02 (end 4.7e-05)" in text and "Largest energy drift up to t = 3" in text, text


def test_sweep_rows_keep_both():
    row = sweeps.evaluation_metrics(_eval("baseline", BASE))
    assert row["drift_energy_max"] == 0.0265 and row["drift_energy"] == 4.7e-5
