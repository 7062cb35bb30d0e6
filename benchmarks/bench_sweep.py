"""Sweeps: serial in process against a LocalCluster of worker processes, and what a run
pays for being a Dask task.

The grid is the issue's: pendulum, baseline / penalty / auglag / hnn × λ ∈ {0.1, 1, 10,
100, 1000} × 5 seeds = 100 cells, of which 40 are distinct runs (only the penalty reads
λ), at the live defaults (1 500 steps). Prints

* wall time of the 40 runs one after another in this process, and on a LocalCluster of
  ``--workers`` processes (started beforehand: its start-up is printed apart), and the
  speed-up (target on 2 cores: ≥ 1.7×);
* the per-task overhead, from the same 40 cells with ``steps=1`` (near-empty runs):
  ``(workers × cluster wall − serial wall) / runs``, the time a worker spends per run
  beyond the run itself (target ≤ 0.3 s).

Usage::

    python benchmarks/bench_sweep.py [--workers 2] [--seeds 5]
"""

from __future__ import annotations

import argparse
import time

from conserv_core import runs, sweeps


def cells(seeds: int, **fixed) -> sweeps.Grid:
    return sweeps.grid("pendulum", ["baseline", "penalty", "auglag", "hnn"], seeds=range(seeds),
                       config={"lam": [0.1, 1, 10, 100, 1000], "device": ["cpu"],
                               **{k: [v] for k, v in fixed.items()}})


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    from distributed import Client

    live, empty = cells(args.seeds), cells(args.seeds, steps=1)
    print(f"grid: {live.describe()} (pendulum, live defaults); near-empty: the same with steps=1")
    runs.training.warm_up()
    t_start, (cluster, client) = timed(lambda: (lambda c: (c, Client(c)))(
        runs.local_cluster(args.workers, dashboard_address="127.0.0.1:0")))
    client.register_plugin(runs.WorkerSetup(1))
    print(f"LocalCluster of {args.workers} workers started in {t_start:.1f} s (once per sweep, not counted)")
    try:
        n = len(empty)
        t_es, _ = timed(lambda: sweeps.run(empty))
        t_ed, frame = timed(lambda: sweeps.run(empty, client=client))
        assert set(frame["status"]) == {"done"}, frame["status"].value_counts()
        over = (args.workers * t_ed - t_es) / n
        print(f"near-empty ({n} runs): serial {t_es:6.1f} s ({t_es / n:.3f} s/run), "
              f"cluster {t_ed:6.1f} s -> per-task overhead {over:.3f} s/run (target <= 0.3)")
        n = len(live)
        t_ls, a = timed(lambda: sweeps.run(live))
        t_ld, b = timed(lambda: sweeps.run(live, client=client))
        assert set(b["status"]) == {"done"}, b["status"].value_counts()
        same = a.drop(columns=["train_seconds", "message"]).equals(b.drop(columns=["train_seconds", "message"]))
        print(f"live-size ({n} runs): serial {t_ls:6.1f} s, cluster {t_ld:6.1f} s -> speed-up "
              f"{t_ls / t_ld:.2f}x on {args.workers} workers (target >= 1.7); rows bit-identical: {same}")
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
