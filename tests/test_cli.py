"""The ``conserv`` command: listings, a tiny run and compare with JSON, and bad input
that exits non-zero with a one-line reason (never a traceback)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest

from conserv_core import cli

TINY = ["--steps", "4", "--width", "8", "--eval-every", "2", "--n-test", "2", "--horizon", "0.5",
        "--n-colloc", "16", "--quiet"]


def run_cli(*argv):
    out = io.StringIO()
    rc = cli.main(list(argv), out=out)
    return rc, out.getvalue()


def test_systems_lists_every_system_with_ranges():
    rc, out = run_cli("systems")
    assert rc == 0
    for key in ("pendulum", "nbody", "flow"):
        assert key in out
    assert "damping" in out and "[0.0, 10.0]" in out


def test_methods_filtered_by_system():
    rc, out = run_cli("methods", "--system", "pendulum")
    assert rc == 0
    assert "hnn" in out and "divfree" not in out


def test_compare_writes_json_with_documented_fields(tmp_path):
    path = tmp_path / "out.json"
    rc, out = run_cli("compare", "--system", "pendulum", "--methods", "baseline,hnn", "--json", str(path), *TINY)
    assert rc == 0, out
    assert "baseline" in out and "hnn" in out and "drift energy" in out
    res = json.loads(path.read_text())
    assert [m["method"] for m in res["methods"]] == ["baseline", "hnn"]
    for m in res["methods"]:
        for key in ("method", "train_seconds", "steps", "test_mse"):
            assert key in m
        curve = m["drift"]["energy"]
        assert set(curve) >= {"t", "rel", "final"} and len(curve["t"]) == len(curve["rel"])
        assert m["steps"] == 4


@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_run_is_checked_once(command, monkeypatch):
    """One plan (training.plan_run) is the only validation: each method's applicability,
    the rollout options and the budget are checked once per run, not again by the spec,
    the comparison and each trainer (a planted second check fails this)."""
    from conserv_core import budget, methods, training

    counts = {"applies": 0, "rollout": 0, "budget": 0}

    def counted(name, f):
        def wrapper(*a, **k):
            counts[name] += 1
            return f(*a, **k)
        return wrapper

    monkeypatch.setattr(methods, "check_applies", counted("applies", methods.check_applies))
    monkeypatch.setattr(training, "check_rollout", counted("rollout", training.check_rollout))
    monkeypatch.setattr(budget, "check", counted("budget", budget.check))
    which = ["--method", "hnn"] if command == "run" else ["--methods", "baseline,hnn"]
    rc, out = run_cli(command, "--system", "pendulum", *which, *TINY)
    assert rc == 0, out
    assert counts == {"applies": 1 if command == "run" else 2, "rollout": 1, "budget": 1}, counts


def test_run_with_system_param_and_save(tmp_path):
    ck = tmp_path / "m.pt"
    rc, out = run_cli("run", "--system", "pendulum", "--method", "baseline", "--param", "damping=0.2",
                      "--save", str(ck), *TINY)
    assert rc == 0, out
    assert ck.exists()


@pytest.mark.parametrize("argv,needle", [
    (["run", "--system", "pendulum", "--method", "divfree"], "valid: baseline"),
    (["run", "--system", "moon", "--method", "hnn"], "system must be one of"),
    (["run", "--system", "pendulum", "--method", "hnn", "--param", "mass=-1"], "mass"),
    (["run", "--system", "pendulum", "--method", "hnn", "--param", "mass=abc"], "mass"),
    (["run", "--system", "pendulum", "--method", "hnn", "--param", "colour=red"], "no parameter 'colour'"),
    (["run", "--system", "pendulum", "--method", "hnn", "--steps", "0"], "steps"),
    (["run", "--system", "pendulum", "--method", "hnn", "--lr", "nan"], "lr"),
    (["compare", "--system", "nbody", "--methods", "hnn,divfree"], "divfree"),
    (["run", "--system", "nbody", "--method", "hnn", "--param", "n_bodies=1"], "n_bodies"),
    (["run", "--system", "flow", "--method", "divfree", "--param", "grid=7"], "grid"),
    (["run", "--method", "hnn"], "--system is required"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys):
    rc = cli.main(argv, out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.slow
def test_console_script_entry_point_has_help():
    proc = subprocess.run([sys.executable, "-m", "conserv_core", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("systems", "methods", "run", "compare", "serve"):
        assert word in proc.stdout


@pytest.mark.slow
def test_bad_input_from_the_real_process_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "conserv_core", "run", "--system", "pendulum", "--method",
                           "hnn", "--param", "length=0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "length" in proc.stderr


@pytest.mark.parametrize("flag", ["--json", "--save"])
@pytest.mark.parametrize("where,reason", [("folder", "is a folder"), ("missing", "does not exist"),
                                          ("proc", "cannot write there")])
def test_an_unwritable_output_path_is_refused_before_training(tmp_path, capsys, flag, where, reason):
    path = {"folder": str(tmp_path), "missing": str(tmp_path / "no" / "out.json"),
            "proc": "/proc/conserv-out.json"}[where]
    rc, out = run_cli("run", "--system", "pendulum", "--method", "baseline", flag, path, *TINY)
    err = capsys.readouterr().err
    assert rc == 2
    assert out == ""  # no results table: nothing was trained
    assert flag in err and path in err and reason in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_path_probe_leaves_no_file_behind_and_changes_none(tmp_path, capsys):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    old.write_text("keep me")
    # refused by the budget after the paths were probed
    rc, _ = run_cli("run", "--system", "pendulum", "--method", "baseline", "--json", str(new),
                    "--save", str(old), "--max-work", "10", *TINY)
    assert rc == 2 and "limit is 1.0e+01" in capsys.readouterr().err
    assert not new.exists() and old.read_text() == "keep me"


@pytest.mark.timeout(30)  # were it let through, it would run for hours: fail instead
def test_an_oversized_run_is_refused_at_once_naming_horizon_dt_and_the_flag(capsys):
    t0 = time.perf_counter()
    rc, out = run_cli("run", "--system", "pendulum", "--method", "baseline", "--horizon", "100000",
                      "--dt", "0.00001", "--quiet")
    err = capsys.readouterr().err
    assert rc == 2 and out == ""
    assert time.perf_counter() - t0 < 1.0
    assert "horizon=100000" in err and "dt=1e-05" in err and "--max-work" in err
    assert len(err.strip().splitlines()) == 1


def test_max_work_raises_or_lowers_the_limit(capsys, monkeypatch):
    monkeypatch.setenv("CONSERV_MAX_WORK", "1e3")  # the flag wins over the server's variable
    rc, _ = run_cli("run", "--system", "pendulum", "--method", "baseline", "--max-work", "10", *TINY)
    assert rc == 2 and "limit is 1.0e+01" in capsys.readouterr().err
    rc, _ = run_cli("run", "--system", "pendulum", "--method", "baseline", "--max-work", "0", *TINY)
    assert rc == 2 and "max_work must be a positive" in capsys.readouterr().err
    rc, out = run_cli("run", "--system", "pendulum", "--method", "baseline", "--max-work", "1e6", *TINY)
    assert rc == 0 and "baseline" in out


def test_progress_is_tqdms_bar_on_a_terminal_and_tenths_in_a_log():
    """On a terminal tqdm draws the bar with every method's rate; a log gets one line per
    tenth of the work (no carriage returns) and each method's end on a line of its own."""
    from conserv_core import cli, training

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def feed(stream, enabled=True):
        bar = cli._ProgressBar(20, stream=stream, enabled=enabled)
        for i in range(1, 11):
            for m, rate in (("baseline", 300.0), ("hnn", 90.0)):
                bar(training.Progress(m, i, 10, 1.0, 1.0, 0.0, 0.0, {}, rate, 0.1))
        bar(training.Finished("hnn", "done", "finished 10 steps", 10, 0.1))
        bar.close()
        return stream.getvalue()

    log = feed(io.StringIO())
    assert "\r" not in log
    assert log.splitlines() == [f"{p}%" for p in range(10, 101, 10)] + ["hnn: done: finished 10 steps"]
    term = feed(Terminal())
    assert "\r" in term and "20/20" in term and "baseline:300/s hnn:90/s" in term
    assert "hnn: done: finished 10 steps\n" in term
    assert feed(io.StringIO(), enabled=False) == feed(Terminal(), enabled=False) == ""  # --quiet
