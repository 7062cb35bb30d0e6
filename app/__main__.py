"""Serve the dashboard: ``conserv serve [options]`` (or ``python -m app [options]``).

Listens on 127.0.0.1 unless told otherwise. For a workshop on one machine, give
``--address 0.0.0.0`` and the host name students type as ``--allow-websocket-origin``.

Training never happens in the server process. By default the server starts a Dask
``LocalCluster`` (one worker process per core, one thread each, torch one thread each,
warmed up before the first click) in a process of its own, and its sessions submit their
runs there. ``--scheduler tcp://HOST:PORT`` uses an existing Dask cluster instead: a room
larger than one machine is served by starting more ``dask worker`` processes (with this
package installed) against that scheduler.

The server runs in the process the user started: SIGTERM or Ctrl-C stops the server, its
``--num-procs`` children and the cluster it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

PROG = "conserv serve"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_in(name: str, lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            rng = f"[{lo}, {hi}]" if hi is not None else f"[{lo}, ∞)"
            raise argparse.ArgumentTypeError(f"must be an integer in {rng}; got {text!r}")
        return value
    return parse


def _positive_float(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number > 0; got {text!r}")
        return value
    return parse


def make_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Serve the Conservation Lab dashboard; runs train on Dask workers.")
    p.add_argument("--port", type=_int_in("--port", 0, 65535), default=5006, help="port to listen on (0: any free port)")
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a room)")
    p.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="extra origins allowed to connect (repeatable), e.g. lab.example.org:5006")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="an existing Dask scheduler to run the training on (default: start a local cluster)")
    p.add_argument("--workers", type=_int_in("--workers", 1, 1024), default=None,
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--threads", type=_int_in("--threads", 0, 256), default=1,
                   help="torch intra-op threads per worker (default 1: fastest for small models "
                        "when several runs share the cores)")
    p.add_argument("--max-work", type=_positive_float("--max-work"), default=None, metavar="UNITS",
                   help="the largest run a link may ask for (see conserv_core.budget; raise it for a trusted room)")
    p.add_argument("--num-procs", type=_int_in("--num-procs", 1, 64), default=1,
                   help="server processes (each holds its own sessions; all share the cluster)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE.py",
                   help="load your own methods and systems (a module that registers them on import; "
                        "repeatable; also $CONSERV_PLUGINS): the server and every worker load it")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.add_argument("--unused-session-lifetime", type=_int_in("--unused-session-lifetime", 1), default=15_000,
                   metavar="MS", help="a closed tab's session (and its run) is dropped this long after it "
                                      "disconnects")
    p.add_argument("--check-unused-sessions", type=_int_in("--check-unused-sessions", 1), default=5_000,
                   metavar="MS", help="how often the server looks for such sessions")
    return p


def _stop_children(keep: set[int]) -> None:
    """Stop the processes this one started (the --num-procs server children), except
    those in ``keep`` (the cluster's, which its pipe stops in order)."""
    import psutil  # installed with distributed

    for child in psutil.Process().children():
        if child.pid not in keep:
            try:
                child.terminate()
            except psutil.Error:
                pass


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = make_parser(prog).parse_args(argv)
    from conserv_core import plugins

    try:  # before any session or worker: both offer what the plugins register
        plugins.load_all(args.plugin)
    except ValueError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return 2
    if args.max_work is not None:
        os.environ["CONSERV_MAX_WORK"] = repr(args.max_work)
    # read by every session (and by forked server processes with --num-procs)
    os.environ["CONSERV_THREADS"] = str(args.threads)
    import panel as pn

    from app import executor, serving
    from conserv_core import runs
    from app.dashboard import TITLE, create_app

    cluster_proc = keeper = None
    if args.scheduler:
        address, link, workers = args.scheduler, "", "?"
    else:
        print("Starting a local Dask cluster for the training runs…", flush=True)
        cluster_proc, address, link, workers, keeper = runs.start_cluster_process(args.workers, args.threads)
    os.environ["CONSERV_SCHEDULER"] = address
    main_pid = os.getpid()
    try:  # the server's own client; --num-procs children make theirs (app.executor.executor)
        ex = executor.connect_executor(address, args.threads)
    except OSError as err:
        sys.stderr.write(f"{prog}: error: cannot reach the Dask scheduler at {address}: {err}\n")
        return 2
    link, workers = link or ex.dashboard_link, ex.slots
    if args.num_procs == 1:
        executor.set_executor(ex)
    else:
        ex.close()

        def in_child():
            # only the parent holds the cluster's pipe (so the cluster ends with it), and a
            # child ends when the parent does, even after kill -9 (it would keep the port)
            if keeper is not None:
                keeper.close()
            executor.watch_parent()

        os.register_at_fork(after_in_child=in_child)

    server = None

    def terminate(signum, frame):
        if os.getpid() != main_pid:  # a --num-procs child: the parent cleans up
            os._exit(0)
        if server is not None:  # stop the event loop from its own thread; cleanup follows
            server.io_loop.asyncio_loop.call_soon_threadsafe(server.io_loop.stop)
        else:  # the --num-procs parent, waiting on its children
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    origins = [f"{args.address}:{args.port}", f"localhost:{args.port}", f"127.0.0.1:{args.port}",
               *args.allow_websocket_origin]
    print(f"Training on the Dask cluster at {address} ({workers} worker slots); its dashboard: "
          f"{link or 'not available'}", flush=True)
    try:
        # with --num-procs > 1 this forks: the children return from it, the parent waits in it
        srv = pn.serve({"/": create_app}, port=args.port, address=args.address, websocket_origin=origins,
                       num_procs=args.num_procs, title=TITLE, start=False,
                       check_unused_sessions_milliseconds=args.check_unused_sessions,
                       unused_session_lifetime_milliseconds=args.unused_session_lifetime,
                       **serving.serve_kwargs())
        if os.getpid() == main_pid:
            server = srv
        srv.start()
        print(f"Conservation Lab on http://{args.address}:{srv.port}/  (Ctrl-C to stop)", flush=True)
        if args.show and os.getpid() == main_pid:
            srv.io_loop.add_callback(srv.show, "/")
        srv.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        if os.getpid() == main_pid:
            if args.num_procs > 1:
                _stop_children({cluster_proc.pid} if cluster_proc is not None else set())
            executor.set_executor(None)
            if keeper is not None:
                try:
                    keeper.send("stop")
                except OSError:
                    pass
                cluster_proc.join(timeout=15)
                if cluster_proc.is_alive():
                    cluster_proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m app"))
