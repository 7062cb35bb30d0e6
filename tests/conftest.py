"""Shared test setup.

Small models on a busy 2-core machine train far faster with one intra-op thread
(see ../shared/PANEL_NOTES.md): the whole suite runs with one.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from serving_helpers import free_port

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


#: what keeps a test out of the fast tier (``pytest -m fast``): one of these markers, or the
#: Dask cluster fixture. A test that takes more than about a second on 2 cores is ``slow``.
HEAVY_MARKERS = ("slow", "browser")


def pytest_collection_modifyitems(config, items):
    """Mark the fast tier: every test that is not heavy (:data:`HEAVY_MARKERS`, the cluster)."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()) or any(item.get_closest_marker(m) for m in HEAVY_MARKERS):
            continue
        item.add_marker(pytest.mark.fast)


def pytest_configure(config):
    """``CONSERV_TEST_REGISTER=path/to/file.py``: import that file and call its
    ``register_all()`` before collection, so the generic tests, which parametrize over the
    registries as they stand at collection, also cover what it adds
    (``tests/test_one_file_additions.py`` runs the suite's generic files this way)."""
    path = os.environ.get("CONSERV_TEST_REGISTER")
    if path:
        import importlib.util

        spec = importlib.util.spec_from_file_location("conserv_test_registrations", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.register_all()


def _dask_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _dask_worker(address: str, nworkers: int) -> subprocess.Popen:
    """``dask worker ADDRESS`` with ``nworkers`` one-thread workers, as a room's machine
    starts them (under a nanny); a minute after the scheduler is gone they close."""
    cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
           "--nworkers", str(nworkers), "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "4GB",
           "--death-timeout", "60"]
    return subprocess.Popen(cmd, env=_dask_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def cluster():
    """The address of a Dask scheduler with two one-thread workers, each its own OS
    process on 127.0.0.1 (``dask scheduler`` and ``dask worker --nworkers 2``), as a room's
    cluster is started; shared by the tests that need one."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # an interrupted session (pytest killed, teardown skipped) leaves no orphans: the
    # scheduler closes after 30 idle minutes, the workers a minute after it is gone
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard", "--idle-timeout", "1800"],
                             env=_dask_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    workers = _dask_worker(address, nworkers=2)
    from distributed import Client

    client = Client(address, timeout=60)
    try:
        client.wait_for_workers(2, timeout=120)
    finally:
        client.close()
    yield address
    _stop(workers, sched)


@pytest.fixture
def join_worker(cluster):
    """Starts one more one-thread ``dask worker`` against ``cluster`` (a second machine's
    worker joining the room) and returns its process; at teardown it leaves, and the test
    waits until the scheduler has only the cluster's own two workers again."""
    started = []

    def join() -> subprocess.Popen:
        started.append(_dask_worker(cluster, nworkers=1))
        return started[-1]

    yield join
    _stop(*started)
    from distributed import Client

    with Client(cluster, timeout=60) as client:
        deadline = time.monotonic() + 60
        while len(client.nthreads()) != 2:
            assert time.monotonic() < deadline, client.nthreads()
            time.sleep(0.1)


@pytest.fixture(scope="session")
def server():
    """The dashboard served from this process, shared by the browser test modules; a closed
    tab's session is dropped a second after it disconnects (the default is 15 s)."""
    from browsing import served_in_process

    with served_in_process(check_unused_sessions_milliseconds=500,
                           unused_session_lifetime_milliseconds=1000) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session (playwright allows one per process at a
    time, so a test that needs a browser takes this one)."""
    from browsing import chromium

    with chromium() as b:
        yield b
