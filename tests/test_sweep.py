"""Sweeps: grids, rows, results files, resume, and the same rows on Dask as in process.

The Dask tests use a ``LocalCluster`` (``workers=2``, as ``conserv sweep`` starts by
default) and the ``cluster`` fixture of conftest.py (a scheduler and two workers as
separate processes on 127.0.0.1). Runs are tiny: tens of steps, a 2-second horizon.
"""

from __future__ import annotations

import io
import math
import os
import signal
import threading
import time

import pandas
import pytest
import torch

import conserv_core
from conserv_core import cli, methods, runs, sweeps, training
from conserv_core.systems import ParameterError, get_system

pytestmark = pytest.mark.timeout(240)

#: a tiny cell: ~0.1 s of training
TINY = dict(steps=[30], width=[16], eval_every=[15], n_test=[4], horizon=[2.0], device=["cpu"])
TINY_FLAGS = ["--steps", "30", "--width", "16", "--eval-every", "15", "--n-test", "4", "--horizon", "2",
              "--device", "cpu", "--quiet"]
#: columns that depend on the clock, not on the spec
CLOCK = ["train_seconds", "message"]


def six_cells() -> sweeps.Grid:
    # 3 methods × 2 seeds × lam [1]: 6 cells (lam drops out of the baseline's and hnn's specs)
    return sweeps.grid("pendulum", ["baseline", "penalty", "hnn"], seeds=[0, 1], config=dict(lam=[1.0], **TINY))


def metrics(frame):
    return frame.drop(columns=CLOCK).sort_values("cell").reset_index(drop=True)


def assert_same_rows(a, b):
    """Every setting and metric equal, floats bit for bit (a CSV read back holds strings
    as pandas' string dtype, a fresh frame as objects: the dtype is not compared)."""
    pandas.testing.assert_frame_equal(metrics(a), metrics(b), check_exact=True, check_dtype=False)


@pytest.fixture(scope="module")
def serial_rows():
    """The six cells run one by one in this process: what every executor must reproduce."""
    return sweeps.run(six_cells())


# ---------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------
def test_grid_merges_cells_whose_method_does_not_read_a_swept_field():
    cells = sweeps.grid("pendulum", ["baseline", "penalty", "auglag", "hnn"], seeds=[0, 1],
                        config=dict(lam=[0.1, 1, 10], **TINY))
    assert cells.requested == 24 and len(cells) == 2 + 6 + 2 + 2, cells.describe()
    assert cells.describe() == "24 cells, 12 distinct runs"
    by_method = {m: [c for c in cells if c.values["method"] == m] for m in ("baseline", "penalty")}
    assert all("lam" not in c.values and "lam" not in c.spec.config for c in by_method["baseline"])
    assert sorted({c.values["lam"] for c in by_method["penalty"]}) == [0.1, 1.0, 10.0]
    assert all(c.spec.methods == (c.values["method"],) for c in cells)  # one method a cell
    assert len({c.key for c in cells}) == len(cells)
    # a swept field named like a metric gets its own column; 1 and 1.0 are one λ
    assert all(c.values["config_steps"] == 30 for c in cells)
    assert sweeps.grid("pendulum", ["penalty"], config=dict(lam=[1]))[0].key == \
        sweeps.grid("pendulum", ["penalty"], config=dict(lam=[1.0]))[0].key


def test_cell_keys_are_stable_across_processes_and_runs():
    # sha256 of the spec's sorted JSON: a literal, so a change of the key's recipe (which
    # would make --resume re-run every finished cell) fails here
    spec = runs.RunSpec("pendulum", {}, ("penalty",), {"lam": 10.0, "seed": 3})
    assert sweeps.cell_key(spec) == "6a0132ba800e"


@pytest.mark.slow
def test_methods_declare_exactly_the_fields_they_read():
    """A sweep shares one run among values of a field the method does not declare: a
    method that reads an undeclared field would get wrong rows. Two values of each
    method-specific field must train bit-identically where undeclared, differently where
    declared (steps of 8, multipliers updated every step so μ's growth and cap act)."""
    sysm = get_system("pendulum")
    shared: list = []  # the problem (data and truth), built by the first trainer
    base = dict(steps=8, width=8, eval_every=8, n_test=2, horizon=0.5, device="cpu", update_every=1)
    two = dict(lam=(1.0, 100.0), mu=(1.0, 100.0), mu_growth=(1.0, 10.0), mu_max=(11.0, 1e6),
               update_every=(1, 1000), lnn_form=("generic", "mechanical"))
    assert set(two) == set(methods.METHOD_FIELDS)

    def weights(method, **kw):
        tr = training.Trainer(sysm, method, training.make_config("pendulum", **{**base, **kw}),
                              problem=shared[0] if shared else None)
        shared[:] = [tr.problem]
        for _ in range(tr.config.steps):
            tr.step()
        return [p.detach().clone() for p in tr.model.parameters()]

    wrong = []
    for m in methods.valid_methods(sysm):
        for f, (a, b) in two.items():
            same = all(torch.equal(x, y) for x, y in zip(weights(m, **{f: a}), weights(m, **{f: b})))
            if same == (f in methods.get_method(m).reads):
                wrong.append(f"{m}.{f}: {'identical' if same else 'different'}")
    assert not wrong, wrong


BAD_GRIDS = [
    (dict(config=dict(lamb=[1])), "no field 'lamb'; valid: steps"),
    (dict(config=dict(lam=[])), "lam: an empty list"),
    (dict(config=dict(lam=[1, -1])), "lam must be a finite number in [0.0, 1000000.0]"),
    # refused also where no cell's method reads it
    (dict(methods=["baseline"], config=dict(lam=[-1])), "lam must be a finite number"),
    (dict(methods=["baseline", "divfree"]), "'divfree' does not apply to system 'pendulum'"),
    (dict(config=dict(lam=list(range(101))), seeds=[0, 1], methods=["penalty"]), "more than 200 distinct runs"),
    (dict(system_params=dict(mass=[-1])), "mass must be a finite number"),
    (dict(seeds=[]), "seeds: an empty list"),
]


@pytest.mark.parametrize("kw,needle", BAD_GRIDS)
def test_bad_grids_are_refused_with_one_line(kw, needle):
    kw = dict(kw)
    with pytest.raises(ParameterError) as err:
        sweeps.grid("pendulum", kw.pop("methods", ["baseline", "penalty"]), **kw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_many_cells_are_allowed_when_asked():
    cells = sweeps.grid("pendulum", ["penalty"], seeds=[0, 1], config=dict(lam=list(range(101))), allow_many=True)
    assert len(cells) == 202


def test_the_work_budget_is_checked_for_every_cell_before_anything_runs():
    with pytest.raises(ParameterError, match="state-steps.*cell method=baseline, seed=0, config_steps=100000"):
        sweeps.grid("pendulum", ["baseline", "penalty"], config=dict(steps=[30, 100_000]), max_work=1e7)


@pytest.mark.parametrize("flags,needle", [
    (["--lamb", "1"], "unrecognized arguments: --lamb"),
    (["--lam", ","], "lam: an empty list"),
    (["--lam", "1,-1"], "lam must be a finite number in [0.0, 1000000.0]"),
    (["--methods", "baseline,divfree"], "'divfree' does not apply"),
    (["--methods", "penalty", "--lam", ",".join(map(str, range(101))), "--seeds", "0-1"], "--yes"),
    (["--seeds", "3-1"], "runs backwards"),
    (["--out", "/no/such/folder/x.csv"], "does not exist"),
])
def test_bad_grids_exit_2_with_one_line_from_the_cli(flags, needle, capsys):
    rc = cli.main(["sweep", "--system", "pendulum", "--in-process", *flags], out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1, err


def test_seed_lists_and_ranges():
    assert cli._parse_seeds("0-3") == [0, 1, 2, 3]
    assert cli._parse_seeds("0,3,5-7") == [0, 3, 5, 6, 7]


# ---------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------
def test_the_maximum_drift_is_kept_where_the_final_one_crosses_zero():
    t = [0.0, 1.0, 2.0, 3.0]
    ev = training.Evaluation("baseline", 10, 0.0, drift={"energy": training.metrics.Curve(t, [0.0, 1e-2, 2e-2, 1e-6])},
                             drift_ood={"energy": training.metrics.Curve(t, [0.0, 0.1, math.nan, 0.2])},
                             learned_drift={}, trajectory_error=training.metrics.Curve(t, [0, 0.1, 0.2, 0.3]),
                             test_mse=0.5, violation=0.1, violation_ood=0.2)
    row = sweeps.evaluation_metrics(ev)
    assert row["drift_energy"] == 1e-6 and row["drift_energy_max"] == 2e-2
    assert row["drift_energy_ood_max"] == math.inf  # a blown-up point is unbounded drift
    assert row["trajectory_error"] == 0.3


def test_a_diverging_cell_is_a_row_and_the_others_are_fine():
    cells = sweeps.grid("pendulum", ["baseline"], config=dict(optimizer=["sgd"], lr=[1e-3, 100.0], **TINY))
    frame = sweeps.run(cells)
    ok, bad = frame[frame["lr"] == 1e-3].iloc[0], frame[frame["lr"] == 100.0].iloc[0]
    assert ok["status"] == "done" and ok["steps"] == 30 and math.isfinite(ok["drift_energy"])
    assert bad["status"] == "diverged" and "diverged" in bad["message"] and bad["steps"] < 30
    assert math.isfinite(bad["test_mse"])  # the last good evaluation's numbers


def test_parquet_without_pyarrow_writes_csv_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(sweeps, "_has_pyarrow", lambda: False)
    cells = sweeps.grid("pendulum", ["baseline"], config=TINY)
    frame = sweeps.run(cells, out=tmp_path / "r.parquet")
    assert frame.attrs["format"] == "csv" and frame.attrs["path"] == str(tmp_path / "r.csv")
    assert "pyarrow is not installed" in frame.attrs["note"]
    assert (tmp_path / "r.csv").exists() and not (tmp_path / "r.parquet").exists()


# ---------------------------------------------------------------------------------------
# results files, interrupt, resume
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_interrupted_sweep_keeps_its_rows_and_resume_runs_only_the_missing_cells(tmp_path, serial_rows, capsys):
    path = tmp_path / "pend.csv"
    cells = six_cells()
    stop = threading.Event()
    seen = []

    def on_row(row):
        seen.append(row)
        if row["status"] == "done":
            assert sum(1 for _ in open(path)) == 1 + len(seen)  # on disk as it completes
        if len(seen) == 2:
            stop.set()

    first = sweeps.run(cells, out=path, on_row=on_row, stop_event=stop)
    assert list(first["status"]) == ["done"] * 2 + ["stopped"] * 4
    assert len(sweeps.read(path)) == 2  # stopped cells are not written: resume runs them
    again = []
    frame = sweeps.run(cells, out=path, resume=True, on_row=again.append)
    assert [r["cell"] for r in again] == [c.key for c in cells[2:]]  # only the missing ones
    on_disk = sweeps.read(path)
    assert sorted(on_disk["cell"]) == sorted(c.key for c in cells)
    assert_same_rows(frame, serial_rows)  # the rows read back from the file bit for bit
    # the CLI's --resume on the finished file runs nothing
    rc = cli.main(["sweep", "--system", "pendulum", "--methods", "baseline,penalty,hnn", "--lam", "1",
                   "--seeds", "0-1", *TINY_FLAGS[:-1], "--in-process", "--out", str(path), "--resume"],
                  out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == 0 and "0 remaining (6 already in the file)" in err, err
    assert len(sweeps.read(path)) == 6


def test_the_three_line_notebook_call(tmp_path):
    frame = conserv_core.sweep("pendulum", ["baseline", "penalty"], seeds=[0], out=tmp_path / "n.csv",
                               lam=[1.0, 10.0], **TINY)
    assert len(frame) == 3 and set(frame["status"]) == {"done"}
    assert frame["lam"].isna().sum() == 1  # the baseline's row has no λ
    with pytest.raises(ParameterError, match="neither a TrainConfig field nor a parameter of pendulum"):
        conserv_core.sweep("pendulum", ["baseline"], lamda=[1])


# ---------------------------------------------------------------------------------------
# Dask
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_on_a_two_worker_local_cluster_equals_the_cells_run_one_by_one(serial_rows):
    frame = sweeps.run(six_cells(), workers=2)
    assert frame.attrs["dashboard_link"].startswith("http://127.0.0.1:")
    assert_same_rows(frame, serial_rows)


def test_a_sweep_through_a_separate_process_cluster(cluster, serial_rows, tmp_path):
    rc = cli.main(["sweep", "--system", "pendulum", "--methods", "baseline,penalty,hnn", "--lam", "1",
                   "--seeds", "0-1", *TINY_FLAGS, "--scheduler", cluster, "--out", str(tmp_path / "c.csv")],
                  out=io.StringIO())
    assert rc == 0
    assert_same_rows(sweeps.read(tmp_path / "c.csv"), serial_rows)


def _processing(client) -> dict[str, list[str]]:
    return {w: [k for k in keys if str(k).startswith("conserv-sweep-")] for w, keys in client.processing().items()}


def test_a_killed_worker_loses_no_row_and_duplicates_none(cluster):
    from distributed import Client

    cells = sweeps.grid("pendulum", ["baseline", "penalty"], seeds=[0, 1],
                        config=dict(lam=[1.0], **{**TINY, "steps": [600], "eval_every": [600]}))
    client = Client(cluster)
    try:
        rows, box = [], {}
        th = threading.Thread(target=lambda: box.setdefault("frame", sweeps.run(cells, client=client,
                                                                                on_row=rows.append)))
        th.start()
        deadline = time.monotonic() + 60
        while not any(_processing(client).values()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # well inside a ~1 s cell
        victim = next(w for w, keys in _processing(client).items() if keys)
        os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
        th.join(180)
        assert not th.is_alive()
        frame = box["frame"]
        assert sorted(frame["cell"]) == sorted(c.key for c in cells)  # none missing
        assert len(rows) == len(cells)  # none twice
        assert set(frame["status"]) == {"done"}, frame[["status", "message"]]
    finally:
        client.wait_for_workers(2, timeout=60)  # the nanny restarts it: later tests get two
        client.close()


def test_live_runs_go_before_a_queued_sweep(cluster):
    from distributed import Client

    cells = sweeps.grid("pendulum", ["baseline"], seeds=list(range(6)),
                        config=dict(**{**TINY, "steps": [400], "eval_every": [400]}))
    client = Client(cluster)
    ex = runs.DaskExecutor(client)
    try:
        rows, box = [], {}
        th = threading.Thread(target=lambda: box.setdefault("frame", sweeps.run(cells, client=client,
                                                                                on_row=rows.append)))
        th.start()
        deadline = time.monotonic() + 60
        while sum(map(len, _processing(client).values())) < 2:  # both workers on sweep cells
            assert time.monotonic() < deadline
            time.sleep(0.05)
        live = ex.submit(runs.RunSpec("pendulum", {}, ("baseline",), dict(steps=5, width=8, n_test=2, horizon=0.5)))
        while live.phase == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started_after = len(rows)
        assert live.finished.wait(60)
        th.join(120)
        # the first worker to free up took the live run, not the next of the 4 queued cells
        assert started_after <= 2, started_after
        assert len(box["frame"]) == 6
    finally:
        ex.close()  # closes the client
