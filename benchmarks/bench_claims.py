"""Every claim the lab shows, checked over seeds (issue 29, part 1).

Runs each claim's setting (:data:`conserv_core.claims.CLAIMS`) over seeds 0–4 as sweeps on
the run service (a ``LocalCluster`` of ``--workers`` processes; ``--workers 0`` trains in
this process), one sweep per distinct setting, and prints one line per claim: where it
is shown, how many seeds it held on, its worst margin against the factor it promises,
and the wall time of its setting's sweep. A claim that holds on fewer seeds than its
sentence promises is marked ``FAILS``; the exit status is 1 if any does.

Usage::

    python benchmarks/bench_claims.py [--workers 2] [--seeds 5] [--only KEY,KEY | --match TEXT]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from conserv_core import claims


def line(r: claims.Result) -> str:
    c = r.claim
    worst = "nan" if math.isnan(r.worst) else ("inf" if math.isinf(r.worst) else f"{r.worst:.3g}")
    need = len(r.margins) if c.seeds is None else c.seeds
    verdict = "ok" if r.ok else "FAILS"
    per_seed = " ".join("nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.3g}")
                        for v in r.margins.values())
    return (f"{c.key:<34} {c.shown[:30]:<30} {r.held}/{len(r.margins)} (needs {need}) "
            f"worst {worst:>8} (≥ {c.factor:g})  {r.wall_s:6.0f} s  {verdict:<5}  [{per_seed}]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=len(claims.SEEDS))
    ap.add_argument("--only", default="", help="claim keys, comma-separated")
    ap.add_argument("--match", default="", help="only the claims whose key contains this")
    args = ap.parse_args()
    chosen = [c for k, c in claims.CLAIMS.items()
              if (not args.only or k in args.only.split(",")) and args.match in k]
    print(f"{len(chosen)} claims over seeds 0–{args.seeds - 1}, workers={args.workers}")
    print(f"{'claim':<34} {'shown':<30} seeds held       worst margin (factor)  wall    verdict  [per seed]")
    t0 = time.perf_counter()
    results = claims.check(chosen, seeds=range(args.seeds), workers=args.workers,
                           on_result=lambda r: print(line(r), flush=True))
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)}/{len(results)} claims hold as written; {time.perf_counter() - t0:.0f} s in all")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
