"""``conserv serve``: refusals before anything starts, the server in the user's process,
training on Dask (a local cluster of its own, or ``--scheduler``), and SIGTERM stopping
the server, its workers and its cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from conftest import ROOT
from serving_helpers import free_port

pytestmark = pytest.mark.timeout(240)
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.slow
@pytest.mark.parametrize("args,flag", [
    (["--port", "-1"], "--port"),
    (["--port", "99999"], "--port"),
    (["--port", "http"], "--port"),
    (["--num-procs", "0"], "--num-procs"),
    (["--num-procs", "-3"], "--num-procs"),
    (["--workers", "0"], "--workers"),
    (["--threads", "-1"], "--threads"),
    (["--unused-session-lifetime", "0"], "--unused-session-lifetime"),
    (["--max-work", "-5"], "--max-work"),
])
def test_bad_serve_options_exit_2_with_one_line(args, flag):
    proc = subprocess.run([sys.executable, "-m", "conserv_core", "serve", *args], capture_output=True,
                          text=True, timeout=60, env=ENV, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "must be" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.slow
def test_serve_help_names_every_server_option():
    proc = subprocess.run([sys.executable, "-m", "conserv_core", "serve", "--help"], capture_output=True,
                          text=True, timeout=60, env=ENV, cwd=ROOT)
    assert proc.returncode == 0
    for opt in ("--scheduler", "--workers", "--max-work", "--unused-session-lifetime", "--num-procs"):
        assert opt in proc.stdout, opt


def _serve(*args: str) -> tuple[subprocess.Popen, int, list[str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "conserv_core", "serve", "--port", str(port), *args],
                            env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Conservation Lab on" in line:
            break
    assert any("Conservation Lab on" in s for s in lines), "".join(lines)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as r:
        assert r.status == 200
    return proc, port, lines


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("procs", ["1", "2"])
def test_serve_starts_a_local_cluster_and_sigterm_stops_everything(procs):
    proc, port, lines = _serve("--workers", "1", "--num-procs", procs)
    try:
        text = "".join(lines)
        assert "Training on the Dask cluster at tcp://127.0.0.1:" in text and "1 worker slots" in text
        assert "its dashboard: http://127.0.0.1:" in text
        time.sleep(1.0)  # the --num-procs children are forked as the server starts
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2 + (int(procs) if procs != "1" else 0), [c.cmdline() for c in tree]
        proc.send_signal(signal.SIGTERM)  # to the server alone, as a service manager does
        assert proc.wait(60) == 0
        gone, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, f"left running after SIGTERM: {[p.cmdline() for p in alive]}"
    finally:
        _stop(proc)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)


def test_serve_uses_an_existing_scheduler(cluster):
    proc, port, lines = _serve("--scheduler", cluster)
    try:
        assert f"Training on the Dask cluster at {cluster} (2 worker slots)" in "".join(lines)
        assert psutil.Process(proc.pid).children() == [] or all(
            "resource_tracker" in " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        _stop(proc)
    from distributed import Client

    with Client(cluster, timeout=30) as c:  # the room's cluster outlives the server
        assert len(c.nthreads()) == 2
