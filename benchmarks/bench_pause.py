"""Play / pause / step: how fast the controls reach a run, in process and on Dask.

Prints, for an :class:`~conserv_core.runs.InProcessExecutor` and a ``LocalCluster`` of two
worker processes (:meth:`~conserv_core.runs.DaskExecutor.local`):

* Resume: from ``RunHandle.resume()`` on a paused run to the client's first newer
  ``RunHandle.latest`` progress (on Dask bounded by the stop watcher's poll,
  ``runs.STOP_POLL_S``, plus a batch, ``runs.BATCH_S``);
* Step: from ``RunHandle.step()`` to the next ``Paused`` record, less nothing: it
  includes training one evaluation interval (``--interval`` steps of two methods);
* Stop while paused: from ``RunHandle.stop()`` to ``Ended``;
* what the controls cost a run that is never paused: steps/s of the same run with and
  without a pause/resume in the middle (the worker's watcher reads the control Variable
  once per poll either way).

Usage::

    python benchmarks/bench_pause.py [--n 5] [--interval 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

from conserv_core import records, runs, training


def _spec(steps: int, interval: int, seed: int = 0) -> runs.RunSpec:
    return runs.RunSpec("pendulum", {}, ("baseline", "hnn"),
                        dict(steps=steps, eval_every=interval, width=16, n_test=4, horizon=2.0, seed=seed,
                             device="cpu"))


def _wait_for(h: runs.RunHandle, kind: type, after: int, timeout: float = 120.0) -> float:
    """Seconds until a record of ``kind`` beyond the first ``after`` records arrives."""
    deadline = time.monotonic() + timeout
    while True:
        recs = list(h.queue)[after:]
        if any(isinstance(r, kind) for r in recs):
            return time.perf_counter()
        if time.monotonic() > deadline or h.finished.is_set():
            raise RuntimeError(f"no {kind.__name__} arrived")
        time.sleep(0.001)


def _controls(ex: runs.Executor, n: int, interval: int) -> dict[str, list[float]]:
    out = {"resume": [], "step": [], "stop": []}
    for i in range(n):
        h = ex.submit(_spec(200_000, interval, seed=i))
        h.pause()
        _wait_for(h, records.Paused, 0)
        for _ in range(2):
            mark = len(h.queue)
            t0 = time.perf_counter()
            h.step()
            out["step"].append(_wait_for(h, records.Paused, mark) - t0)
        mark = len(h.queue)
        at = max(p.step for p in h.latest.values())
        t0 = time.perf_counter()
        h.resume()
        while max(p.step for p in h.latest.values()) <= at:
            time.sleep(0.001)
        out["resume"].append(time.perf_counter() - t0)
        h.pause()
        _wait_for(h, records.Paused, mark)
        t0 = time.perf_counter()
        h.stop()
        h.finished.wait(30)
        out["stop"].append(time.perf_counter() - t0)
    return out


def _throughput(ex: runs.Executor, steps: int, paused: bool) -> float:
    """Method-steps per second of a run (its own clock: set-up and any pause left out)."""
    h = ex.submit(_spec(steps, steps // 4, seed=1))
    if paused:
        h.pause()
        _wait_for(h, records.Paused, 0)
        h.resume()
    h.finished.wait(300)
    fins = [r for r in h.queue if isinstance(r, training.Finished)]
    return sum(f.step for f in fins) / max(f.elapsed for f in fins)


def _ms(xs: list[float]) -> str:
    return f"median {1e3 * statistics.median(xs):7.1f} ms   max {1e3 * max(xs):7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="runs per executor")
    ap.add_argument("--interval", type=int, default=200, help="steps per evaluation interval")
    ap.add_argument("--steps", type=int, default=4000, help="steps of the throughput run")
    args = ap.parse_args()
    training.warm_up()
    executors = [("in process", runs.InProcessExecutor(threads=1))]
    executors.append(("Dask, 2 worker processes", runs.DaskExecutor.local(n_workers=2,
                                                                         dashboard_address="127.0.0.1:0")))
    try:
        for name, ex in executors:
            print(f"\n{name}  (STOP_POLL_S = {runs.STOP_POLL_S} s, interval {args.interval} steps × 2 methods)")
            got = _controls(ex, args.n, args.interval)
            print(f"  resume → newer progress       {_ms(got['resume'])}")
            print(f"  step → next Paused (trains)   {_ms(got['step'])}")
            print(f"  stop while paused → Ended     {_ms(got['stop'])}")
            plain = _throughput(ex, args.steps, paused=False)
            held = _throughput(ex, args.steps, paused=True)
            print(f"  steps/s, never paused {plain:8.0f}   paused and resumed once {held:8.0f}")
    finally:
        for _, ex in executors:
            ex.close()


if __name__ == "__main__":
    main()
