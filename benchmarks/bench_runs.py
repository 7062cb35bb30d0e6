"""The run service's own costs: how fast a record travels from a Dask worker to the
session, by each Dask mechanism, and what a run pays for leaving the server process.

Prints, on a LocalCluster of two worker processes:

* worker → client latency of one small message (p50 / p95 over many), through
  - topic events (``Worker.log_event`` → ``Client.subscribe_topic``: what the run
    service uses),
  - a ``distributed.Queue`` (``put`` on the worker, a blocking ``get`` on the client),
  - a ``distributed.Variable`` polled by the client;
* Stop's latency: from ``RunHandle.stop()`` to the run's ``Ended`` record on the client;
* per-run overhead: submit → ``Started`` and submit → first ``Evaluation`` for a tiny
  run, in process and on Dask.

Usage::

    python benchmarks/bench_runs.py [--n 200]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from conserv_core import runs, training


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _ms(xs: list[float]) -> str:
    return f"p50 {1e3 * statistics.median(xs):7.2f} ms   p95 {1e3 * _pct(xs, 0.95):7.2f} ms"


# -- the worker side of each transport (run as Dask tasks) ------------------------------
def _send_topic(topic: str, n: int, gap: float) -> None:
    from distributed import get_worker

    w = get_worker()
    for i in range(n):
        w.log_event(topic, {"i": i, "t": time.time()})
        time.sleep(gap)


def _send_queue(name: str, n: int, gap: float) -> None:
    from distributed import Queue

    q = Queue(name)
    for i in range(n):
        q.put({"i": i, "t": time.time()})
        time.sleep(gap)


def _send_variable(name: str, n: int, gap: float) -> None:
    from distributed import Variable

    v = Variable(name)
    for i in range(n):
        v.set({"i": i, "t": time.time()})
        time.sleep(gap)


def transports(client, n: int, gap: float = 0.01) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    # topics
    lat: list[float] = []
    done = threading.Event()

    def on_event(event):
        _, msg = event
        lat.append(time.time() - msg["t"])
        if msg["i"] == n - 1:
            done.set()

    client.subscribe_topic("bench-topic", on_event)
    client.submit(_send_topic, "bench-topic", n, gap, pure=False).result()
    done.wait(30)
    client.unsubscribe_topic("bench-topic")
    out["topic events (used)"] = lat
    # queue
    from distributed import Queue, Variable

    q = Queue("bench-queue", client=client)
    fut = client.submit(_send_queue, "bench-queue", n, gap, pure=False)
    lat = []
    for _ in range(n):
        msg = q.get(timeout=30)
        lat.append(time.time() - msg["t"])
    fut.result()
    out["distributed.Queue"] = lat
    # variable, polled every 10 ms (a poll can only see the newest value)
    v = Variable("bench-var", client=client)
    fut = client.submit(_send_variable, "bench-var", n, gap, pure=False)
    lat, seen = [], -1
    deadline = time.monotonic() + 60
    while seen < n - 1 and time.monotonic() < deadline:
        try:
            msg = v.get(timeout=1)
        except Exception:
            continue
        if msg["i"] != seen:
            seen = msg["i"]
            lat.append(time.time() - msg["t"])
        time.sleep(0.01)
    fut.result()
    out["Variable, polled 10 ms"] = lat
    return out


def tiny_spec(steps: int = 20) -> runs.RunSpec:
    return runs.RunSpec("pendulum", {}, ("baseline",), dict(steps=steps, width=16, eval_every=10, n_test=4,
                                                             horizon=2.0, device="cpu"))


def overhead(ex: runs.Executor, n: int = 5) -> tuple[list[float], list[float]]:
    started, first_eval = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        h = ex.submit(tiny_spec())
        t_start = t_eval = None
        while not h.finished.is_set() or t_eval is None:
            for rec in list(h.queue):
                if t_start is None and isinstance(rec, runs.Started):
                    t_start = time.perf_counter() - t0
                if t_eval is None and isinstance(rec, training.Evaluation):
                    t_eval = time.perf_counter() - t0
            if h.finished.is_set() and t_eval is None:
                break
            time.sleep(0.001)
        h.finished.wait(60)
        started.append(t_start)
        first_eval.append(t_eval)
    return started, first_eval


def stop_latency(ex: runs.Executor, n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        h = ex.submit(tiny_spec(steps=200_000))
        while not any(isinstance(r, training.Progress) for r in list(h.queue)):
            time.sleep(0.01)
        t0 = time.perf_counter()
        h.stop()
        h.finished.wait(30)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="messages per transport")
    args = ap.parse_args()
    training.warm_up()
    ex = runs.DaskExecutor.local(n_workers=2, dashboard_address=None)
    try:
        print(f"LocalCluster of {ex.slots} worker processes, one thread each\n")
        print(f"worker -> client latency of one small message ({args.n} messages, 10 ms apart):")
        for name, lat in transports(ex.client, args.n).items():
            print(f"  {name:<24} {_ms(lat)}   ({len(lat)} seen)")
        print()
        local = runs.InProcessExecutor()
        for label, e in (("in process", local), ("Dask", ex)):
            s, f = overhead(e)
            print(f"{label:<11} submit -> Started {_ms(s)};  submit -> first evaluation {_ms(f)}")
        for label, e in (("in process", local), ("Dask", ex)):
            print(f"{label:<11} Stop -> Ended {_ms(stop_latency(e))}   (target < 1 s)")
    finally:
        ex.close()


if __name__ == "__main__":
    main()
