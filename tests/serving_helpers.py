"""Servers started the way a workshop starts them: as their own process (group), on a
free port, with this checkout's code (``PYTHONPATH``), output kept in a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, timeout_s: float = 90, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll until ``url`` answers 200 (a race gives ERR_CONNECTION_REFUSED)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout_s} s:\n{log.read_text() if log else ''}")
        time.sleep(0.3)


class ServerProcess:
    """``python -m app ...`` or ``panel serve ...`` as a process group of its own (with
    ``--num-procs`` its workers outlive a killed parent: the group is what gets killed)."""

    def __init__(self, args: list[str], log: Path, port: int | None = None, path: str = "/"):
        self.port = port or free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90, ready: str | None = None) -> ServerProcess:
        """Start and wait until ``ready`` (a path; default the page, which opens a session)
        answers."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        root = f"http://127.0.0.1:{self.port}"
        wait_until_up(root + ready if ready else self.url, timeout_s, self.proc, self.log)
        return self

    def kill(self) -> None:
        """``kill -9`` of the whole group, as a crash or an impatient Ctrl-C would."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def python_m_app(log: Path, *extra: str, port: int | None = None) -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "app", "--port", "{port}", *extra], log, port=port)


def panel_serve(log: Path, *extra: str) -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "panel", "serve", "app/dashboard.py", "--port", "{port}",
                          "--address", "127.0.0.1", "--allow-websocket-origin", "127.0.0.1:{port}", *extra], log, path="/dashboard")


def leaves_this_machine(url: str) -> bool:
    """Whether a request for ``url`` goes anywhere but this server (``blob:`` URLs
    carry their origin; ``data:`` and ``about:`` go nowhere)."""
    if url.startswith("blob:"):
        url = url[len("blob:"):]
    parsed = urlparse(url)
    if parsed.scheme in ("data", "about", "javascript"):
        return False
    return parsed.hostname not in LOCAL_HOSTS


def http_get(url: str) -> tuple[int, str]:
    """Status and body, without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
