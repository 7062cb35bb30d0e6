"""What a burst of Train presses costs (issue 31): runs submitted, runs started on the
workers, and the tracebacks Dask's client logs for late events of dropped runs.

A student who presses Train fifty times (or whose browser sends two hundred clicks in one
websocket message) should start one run, not fifty, and a run replaced meanwhile should
end without a word in the server's log. This presses Train ``--clicks`` times in a row on
a headless session, with settings unchanged, on an in-process executor and on a
one-worker ``LocalCluster``, then waits for the last run to finish and prints:

* ``submitted``: calls of ``Executor.submit``;
* ``started``: in process, runs whose ``Started`` record arrived (their thread began); on
  the cluster, run tasks the scheduler sent to a worker (one stopped on its way returns
  there at once, with no record, so this counts an upper bound);
* ``tracebacks``: ERROR lines on the ``distributed`` loggers (``No event handler known
  for topic conserv-run-…`` before the fix).

    python benchmarks/bench_train_spam.py --clicks 50
    python benchmarks/bench_train_spam.py --clicks 50 --vary   # a new seed per press
"""

from __future__ import annotations

import argparse
import logging
import time

from conserv_core import runs


class _Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _processing_keys(dask_scheduler=None) -> int:
    """Run tasks the scheduler ever sent to a worker."""
    return len({t[0] for t in dask_scheduler.transition_log
                if str(t[0]).startswith("conserv-run-") and t[2] == "processing"})


def burst(ex: runs.Executor, clicks: int, vary: bool = False) -> dict:
    import app
    from app import session as app_session

    submitted = []
    real_submit = ex.submit

    def counting_submit(*a, **k):
        h = real_submit(*a, **k)
        submitted.append(h)
        return h

    ex.submit = counting_submit
    d = app.Dashboard(autodrain=False, session=app_session.LabSession(executor_=ex))
    w = d.controls.config_widgets
    w["steps"].value, w["width"].value, w["horizon"].value = 24, 8, 2.0
    d.session.evals_per_run = 3
    t0 = time.perf_counter()
    for i in range(clicks):
        if vary:  # another seed each press: every press replaces the run (no coalescing)
            w["seed"].value = i
        d.controls.train_button.clicks += 1
    took = time.perf_counter() - t0
    deadline = time.monotonic() + 120
    while d.session.running and time.monotonic() < deadline:
        d.drain()
        time.sleep(0.02)
    time.sleep(1.5)  # late events of dropped runs arrive meanwhile
    d.close()
    ex.submit = real_submit
    return {"submitted": len(submitted), "clicks_s": round(took, 3), "phase": d.session.phase}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--vary", action="store_true", help="change the seed before every press")
    args = parser.parse_args()
    errors = _Count()
    for name in ("distributed", "distributed.client"):  # the client's logger does not propagate
        logging.getLogger(name).addHandler(errors)

    ex = runs.InProcessExecutor(threads=1)
    threads_before = runs.RunHandle.deliver
    started: set[str] = set()

    def deliver(self, batch, latest=None):
        if any(isinstance(r, runs.Started) for r in batch):
            started.add(self.id)
        return threads_before(self, batch, latest)

    runs.RunHandle.deliver = deliver
    print("in process:", {**burst(ex, args.clicks, args.vary), "started": len(started)})
    ex.close()

    started.clear()
    ex = runs.DaskExecutor.local(n_workers=1, dashboard_address="127.0.0.1:0")
    try:
        res = burst(ex, args.clicks, args.vary)
        print("1-worker LocalCluster:", {**res, "started": ex.client.run_on_scheduler(_processing_keys),
                                         "tracebacks": len(errors.lines)})
        for line in errors.lines[:3]:
            print("   ", line.splitlines()[0][:120])
    finally:
        ex.close()


if __name__ == "__main__":
    main()
