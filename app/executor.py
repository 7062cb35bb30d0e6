"""Where this process's dashboard sessions run their training.

``conserv serve`` sets a Dask executor (:func:`set_executor`); its ``--num-procs``
children find the scheduler in ``CONSERV_SCHEDULER``; a notebook or a test gets a thread
of its own process. The server process never trains when served by ``conserv serve``.
"""

from __future__ import annotations

import os
import time

from conserv_core import runs

def server_threads() -> int:
    """torch intra-op threads per run: a server setting (``--threads``), default 1."""
    try:
        return max(0, int(os.environ.get("CONSERV_THREADS", "1")))
    except ValueError:
        return 1


_executor: runs.Executor | None = None
_executor_pid: int | None = None


def executor() -> runs.Executor:
    """Where this process's sessions run their training: what :func:`set_executor` chose
    (``conserv serve``: a Dask cluster); else the scheduler named by ``CONSERV_SCHEDULER``
    (the server's ``--num-procs`` children connect on their first session); else a thread
    of this process (notebooks, tests)."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        address = os.environ.get("CONSERV_SCHEDULER")
        if address:
            _executor = connect_executor(address, server_threads())
        else:
            _executor = runs.InProcessExecutor(threads=server_threads())
        _executor_pid = os.getpid()
    return _executor


def set_executor(ex: runs.Executor | None) -> None:
    """Make ``ex`` the executor of every session created from now on (None: the default
    again); the one it replaces is closed."""
    global _executor, _executor_pid
    old, _executor, _executor_pid = _executor, ex, os.getpid() if ex is not None else None
    if old is not None and old is not ex and _executor_pid in (None, os.getpid()):
        old.close()


def connect_executor(address: str, threads: int = 1) -> runs.DaskExecutor:
    """A Dask executor on the scheduler at ``address`` (``OSError`` if it cannot be reached)."""
    try:
        return runs.DaskExecutor.connect(address, threads=threads)
    except Exception as err:  # distributed raises OSError or TimeoutError subclasses
        raise OSError(str(err) or type(err).__name__) from None


def watch_parent() -> None:
    """In a forked server process: exit when the parent goes (it may have been killed
    with -9, and an orphan would keep the port)."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="conserv-watch-parent", daemon=True).start()
