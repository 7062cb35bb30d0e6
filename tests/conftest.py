"""Shared test setup.

Small models on a busy 2-core machine train far faster with one intra-op thread
(see ../shared/PANEL_NOTES.md): the whole suite runs with one.
"""

import os
import signal
import subprocess
import sys
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


@pytest.fixture(scope="session")
def cluster():
    """The address of a Dask scheduler with two one-thread workers, each its own OS
    process on 127.0.0.1 (``dask scheduler`` and ``dask worker --nworkers 2``), as a room's
    cluster is started; shared by the tests that need one."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    # an interrupted session (pytest killed, teardown skipped) leaves no orphans: the
    # scheduler closes after 30 idle minutes, the workers a minute after it is gone
    sched = subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                              "--idle-timeout", "1800"],
                             env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                  "--nworkers", "2", "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "4GB",
                  "--death-timeout", "60"]
    workers = subprocess.Popen(worker_cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    from distributed import Client

    client = Client(address, timeout=60)
    try:
        client.wait_for_workers(2, timeout=120)
    finally:
        client.close()
    yield address
    for proc in (workers, sched):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in (workers, sched):
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)




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
