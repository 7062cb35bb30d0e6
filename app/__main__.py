"""Serve the dashboard: ``python -m app [--port P] [--address A] ...`` (``conserv serve``).

Listens on 127.0.0.1 unless told otherwise. For a workshop on one machine, give
``--address 0.0.0.0`` and the host name students type as ``--allow-websocket-origin``.
"""

from __future__ import annotations

import argparse
import os
import sys


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="Serve the Conservation Lab dashboard.")
    p.add_argument("--port", type=int, default=5006, help="port to listen on (0: any free port)")
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a room)")
    p.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="extra origins allowed to connect (repeatable), e.g. lab.example.org:5006")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per training run (default 1: fastest for small models "
                        "when several sessions share the cores)")
    p.add_argument("--num-procs", type=int, default=1, help="server processes (each holds its own sessions)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.add_argument("--unused-session-lifetime", type=int, default=15_000, metavar="MS",
                   help="a closed tab's session (and its training thread) is dropped this long after "
                        "it disconnects")
    p.add_argument("--check-unused-sessions", type=int, default=5_000, metavar="MS",
                   help="how often the server looks for such sessions")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.threads < 0:
        sys.stderr.write("python -m app: error: --threads must be >= 0\n")
        return 2
    # read by every session (and by forked workers with --num-procs)
    os.environ["CONSERV_THREADS"] = str(args.threads)
    import panel as pn

    from app.dashboard import TITLE, create_app
    from app.serving import serve_kwargs
    from app.session import warm_up

    warm_up()

    origins = [f"{args.address}:{args.port}", f"localhost:{args.port}", f"127.0.0.1:{args.port}",
               *args.allow_websocket_origin]
    print(f"Conservation Lab on http://{args.address}:{args.port}/  "
          f"(torch threads per run: {args.threads}; Ctrl-C to stop)", flush=True)
    pn.serve({"/": create_app}, port=args.port, address=args.address, websocket_origin=origins,
             num_procs=args.num_procs, show=args.show, title=TITLE, threaded=False,
             check_unused_sessions_milliseconds=args.check_unused_sessions,
             unused_session_lifetime_milliseconds=args.unused_session_lifetime, **serve_kwargs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
