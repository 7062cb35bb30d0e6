"""The ``conserv`` command: listings, a tiny run and compare with JSON, and bad input
that exits non-zero with a one-line reason (never a traceback)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

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


def test_console_script_entry_point_has_help():
    proc = subprocess.run([sys.executable, "-m", "conserv_core", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("systems", "methods", "run", "compare", "serve"):
        assert word in proc.stdout


def test_bad_input_from_the_real_process_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "conserv_core", "run", "--system", "pendulum", "--method",
                           "hnn", "--param", "length=0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "length" in proc.stderr
