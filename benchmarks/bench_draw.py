"""What drawing costs the server's main thread, per session, without a browser.

One real run of the pendulum demo (4 methods by default) is recorded once through a
listener, with each record's arrival time; the same records are then replayed into N
dashboards, each built inside its own Bokeh ``Document`` (so Bokeh models exist and
change events are generated), on a simulated clock ticking every ``DRAIN_MS`` as the
served periodic callback does (and draining at once after each evaluation, as the
worker's wake-up does). Measured per drain on the calling thread
(``time.thread_time``): ``LabSession.drain`` itself (records into LiveData, status,
plot updates) plus what the server then does with the document's changes: one
``PATCH-DOC`` message per drain, serialised (header, metadata, content and binary
buffers), which is the path Panel's ``unlocked``/``write_events`` take.

Printed: main-thread CPU per session for the whole run and per second of live run, the
mean cost of drains that draw an evaluation round (drift curves and the system view),
of drains that draw only loss/violation, and of the rest; and the implied number of
sessions of this demo one core can serve.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_draw.py               # 5 sessions
    PYTHONPATH=$PWD python benchmarks/bench_draw.py --sessions 30
    PYTHONPATH=$PWD python benchmarks/bench_draw.py --record       # record the run again
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import threading
import time

from conserv_core import runs

CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), "conserv_bench_draw_records.pkl")
DEFAULT_METHODS = "baseline,hnn,penalty,auglag"


# -- recording ----------------------------------------------------------------------------
def record(methods: list[str], path: str) -> dict:
    """One real run of the pendulum demo; every record with its arrival time (s)."""
    import torch

    from app.session import LabSession
    from conserv_core import training

    torch.set_num_threads(1)
    s = LabSession(threads=1)
    s.methods = methods
    cfg, sysm = s.build_config(), s.build_system()
    recs: list[tuple[float, object]] = []
    t0 = time.perf_counter()
    comp = training.Comparison(sysm, methods, cfg, listener=lambda r: recs.append((time.perf_counter() - t0, r)))
    setup = time.perf_counter() - t0
    comp.run()
    wall = time.perf_counter() - t0
    out = {"methods": methods, "setup": setup, "wall": wall, "records": recs,
           "config": {k: getattr(cfg, k) for k in ("steps", "eval_every", "width", "horizon")}}
    with open(path, "wb") as fh:
        pickle.dump(out, fh)
    return out


# -- replay -------------------------------------------------------------------------------
class SimClock:
    """Stands in for ``time`` in app.session and app.rundata: ``perf_counter`` is the
    replay's clock."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


class ReplayExecutor(runs.Executor):
    """An executor whose runs are fed from the recording instead of a worker: the session
    gets a real :class:`runs.RunHandle`, and each record goes through the same batching
    and thinning a worker applies (``runs._Batcher``)."""

    def _launch(self, handle: runs.RunHandle) -> None:
        handle.batcher = runs._Batcher(lambda recs, latest: handle.deliver(recs, latest),
                                       handle.spec.steps, batch_s=0.0)
        handle.deliver([runs.Started("replay")])

    def _stop(self, handle: runs.RunHandle) -> None:
        pass


class Page:
    """One dashboard in its own Document, with its change events collected."""

    def __init__(self, methods: list[str]):
        import bokeh.document
        from panel.io.state import set_curdoc, state

        import app

        self.doc = bokeh.document.Document()
        state._connected[self.doc] = True  # a browser is attached: changes are sent, not dropped
        state._thread_id_[self.doc] = threading.get_ident()  # this is the session's own thread
        self.events: list = []
        with set_curdoc(self.doc):
            from app import session as S

            self.dash = app.Dashboard(autodrain=False, sync_url=False,
                                      session=S.LabSession(executor_=ReplayExecutor()))
            self.dash.session.methods = methods
            self.root = self.dash.__panel__().get_root(self.doc)
            self.doc.add_root(self.root)
        self.doc.on_change(self.events.append)
        self.cpu: dict[str, list[float]] = {"eval": [], "loss": [], "mult": [], "other": []}
        self.bytes = 0
        self.flushed: set[str] = set()

    def train(self) -> runs.RunHandle:
        from panel.io.state import set_curdoc

        with set_curdoc(self.doc):
            self.dash.session.train()
        self.events.clear()
        return self.dash.session.run

    def drain(self) -> None:
        from bokeh.protocol import Protocol
        from panel.io.state import set_curdoc

        self.flushed = set()
        c0 = time.thread_time()
        with set_curdoc(self.doc):
            self.dash.session.drain(budget=DRAW_BUDGET)
        if self.events:  # what the server does with the drain's changes
            msg = Protocol().create("PATCH-DOC", list(self.events))
            n = len(msg.header_json) + len(msg.metadata_json) + len(msg.content_json)
            for buf in msg._buffers:
                n += len(json.dumps(buf.ref)) + len(buf.to_bytes())
            self.bytes += n
            self.events.clear()
        cpu = time.thread_time() - c0
        kind = ("eval" if any(p.startswith("drift") or p == "views" for p in self.flushed)
                else "loss" if self.flushed & {"loss", "violation"}
                else "mult" if "multipliers" in self.flushed else "other")
        self.cpu[kind].append(cpu)

    def close(self) -> None:
        self.dash.close()


DRAW_BUDGET = None


def replay(data: dict, n_sessions: int) -> dict:
    from app import drain as D
    from app import rundata as R
    from app import session as S
    from conserv_core import training

    global DRAW_BUDGET
    DRAW_BUDGET = D.DRAW_BUDGET_S
    clock = SimClock()
    real_time = S.time
    pages: list[Page] = []
    # which plots each flush drew (whatever the implementation): dirty before minus after
    real_flush = S.LiveData.flush
    current: list[Page] = []

    def flush(self, *a, **kw):
        before = set(self.dirty)
        try:
            return real_flush(self, *a, **kw)
        finally:
            if current:
                current[0].flushed |= before - set(self.dirty)

    S.time, D.time, R.time, S.LiveData.flush = clock, clock, clock, flush
    try:
        c0 = time.thread_time()
        pages = [Page(data["methods"]) for _ in range(n_sessions)]
        c1 = time.thread_time()
        handles = [p.train() for p in pages]
        c2 = time.thread_time()
        setup_cpu = ((c1 - c0) / n_sessions, (c2 - c1) / n_sessions)

        def drain_all():
            for p in pages:
                current[:] = [p]
                p.drain()
            current.clear()

        records = [(data["setup"], D.SetupDone(data["setup"])), *[(t, r) for t, r in data["records"]]]
        tick = D.DRAIN_MS / 1000
        next_tick = tick
        for t, rec in records:
            while t > next_tick:  # the periodic drains before this record arrives
                clock.now = next_tick
                drain_all()
                next_tick += tick
            clock.now = t
            for run in handles:
                run.batcher(rec)
            if isinstance(rec, training.Evaluation):  # the worker's wake-up: a drain now
                drain_all()
        for run in handles:
            run.batcher(runs.Ended())
        for _ in range(100):  # until every session concluded and drew everything
            clock.now = next_tick
            drain_all()
            next_tick += tick
            if all(p.dash.session.run is None and not p.dash.session.data.dirty for p in pages):
                break
        ok = [p.dash.session.status_kind for p in pages]
        assert all(k == "success" for k in ok), ok
    finally:
        S.time, D.time, R.time, S.LiveData.flush = real_time, real_time, real_time, real_flush
        for p in pages:
            p.close()
    rounds = len({r.step for _, r in data["records"]
                  if isinstance(r, training.Evaluation) and r.method != "truth"})
    return {"pages": pages, "rounds": rounds, "live_s": next_tick, "setup_cpu": setup_cpu}


def report(data: dict, res: dict) -> None:
    pages, rounds, wall = res["pages"], res["rounds"], data["wall"]
    per = []
    for p in pages:
        per.append({k: sum(v) for k, v in p.cpu.items()})
    total = statistics.mean(sum(d.values()) for d in per)
    ev_sum = statistics.mean(d["eval"] for d in per)
    n = {k: statistics.mean(len(p.cpu[k]) for p in pages) for k in ("eval", "loss", "mult", "other")}
    mean_ms = {k: 1e3 * statistics.mean([c for p in pages for c in p.cpu[k]] or [0.0]) for k in n}
    per_s = total / wall
    cfg = data["config"]
    print(f"recorded run: pendulum, {','.join(data['methods'])}, {cfg['steps']} steps, eval every "
          f"{cfg['eval_every']}, width {cfg['width']}: {wall:.1f} s live ({data['setup']:.1f} s setup), "
          f"{rounds} evaluation rounds")
    print(f"replayed into {len(pages)} sessions; per session:")
    print(f"  main-thread CPU for the whole run   {1e3 * total:8.1f} ms   "
          f"({sum(p.bytes for p in pages) / len(pages) / 1e3:.0f} kB of PATCH-DOC)")
    print(f"  per evaluation round                {1e3 * ev_sum / max(rounds, 1):8.2f} ms   "
          f"({n['eval']:.0f} drains drew drift/system view, mean {mean_ms['eval']:.2f} ms)")
    print(f"  per loss update (loss+violation)    {mean_ms['loss']:8.2f} ms   ({n['loss']:.0f} drains)")
    print(f"  per multiplier-only update          {mean_ms['mult']:8.2f} ms   ({n['mult']:.0f} drains)")
    print(f"  per other drain (status, progress)  {mean_ms['other']:8.2f} ms   ({n['other']:.0f} drains)")
    print(f"  rates of a live run: {rounds / wall:.2f} evaluation rounds/s, {n['loss'] / wall:.2f} loss updates/s, "
          f"{sum(n.values()) / wall:.1f} drains/s")
    build, click = res["setup_cpu"]
    print(f"  once per page (not in the figures above): building it {1e3 * build:.0f} ms, "
          f"the Train click {1e3 * click:.0f} ms")
    print(f"  main-thread CPU per second of live run: {1e3 * per_s:.1f} ms "
          f"-> {1 / per_s:.0f} sessions of this demo per core (30 sessions: {30 * per_s:.2f} cores)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--record", action="store_true", help="record the run again (else reuse the cache)")
    ap.add_argument("--cache", default=CACHE)
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    data = None
    if not args.record and os.path.exists(args.cache):
        with open(args.cache, "rb") as fh:
            data = pickle.load(fh)
        if data["methods"] != methods:
            data = None
    if data is None:
        print("recording one real run…", flush=True)
        data = record(methods, args.cache)
    import app

    app.extension()
    report(data, replay(data, args.sessions))


if __name__ == "__main__":
    main()
