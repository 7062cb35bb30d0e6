"""Training benchmark: every system x method pair with its recommended configuration.

    python benchmarks/bench_training.py                 # CPU (and CUDA when present)
    python benchmarks/bench_training.py --systems pendulum --methods baseline,hnn
    python benchmarks/bench_training.py --threads 2     # compare thread counts yourself

Prints, per pair and device: training steps/s (optimisation steps only), seconds to the
default result (set-up, every evaluation and the steps), seconds to the first evaluation
record, final drift of each true invariant, and peak memory (resident set of a fresh
process; CUDA: peak allocated). Each pair runs in its own process so peaks don't mix.

Targets (issue 3), checked and printed as PASS/FAIL:
  * pendulum hnn trains its default run in under 10 s on 2 CPU cores;
  * training k methods for a comparison costs no more than k single runs (ratio <= 1.1);
  * the first evaluation record arrives within 1 s of starting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def one(system: str, method: str, device: str, threads: int, steps: int | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    from conserv_core import get_system, training

    t_warm = time.perf_counter()
    training.warm_up()  # one-time torch imports, paid by a server at start-up
    t_warm = time.perf_counter() - t_warm
    sysm = get_system(system)
    kw = {"device": device, "threads": threads}
    if steps:
        kw["steps"] = steps
    cfg = training.make_config(system, **kw)
    t0 = time.perf_counter()
    first = []

    def listen(rec):
        if isinstance(rec, training.Evaluation) and not first:
            first.append(time.perf_counter() - t0)

    tr = training.Trainer(sysm, method, cfg, listener=listen)
    tr.run()
    total = time.perf_counter() - t0
    ev = tr.last_eval
    out = {
        "system": system, "method": method, "device": str(tr.device), "status": tr.status,
        "steps": tr.step_count, "total_s": total, "warm_up_s": t_warm, "first_eval_s": first[0] if first else None,
        # steps/s of the optimisation alone: evaluation time is excluded
        "steps_per_s": tr.step_count / max(sum(_step_seconds(tr)), 1e-9),
        "drift": {k: v.final for k, v in ev.drift.items()} if ev else {},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if tr.device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _step_seconds(tr) -> list[float]:
    """Per-step wall times reconstructed from the progress records' elapsed clock,
    minus the time spent in evaluations between them."""
    evals = {e.step: e for e in tr.evaluations}
    out, prev = [], 0.0
    for p in tr.history:
        dt = p.elapsed - prev
        out.append(dt)
        prev = p.elapsed
        if p.step in evals:
            prev = evals[p.step].elapsed
    return out


def comparison_ratio(system: str, methods: list[str], threads: int, steps: int | None) -> tuple[float, float]:
    """(seconds for one Comparison of all methods, sum of seconds of single runs)."""
    import torch

    torch.set_num_threads(threads)
    from conserv_core import get_system, training

    training.warm_up()
    sysm = get_system(system)
    kw = {"threads": threads, "device": "cpu"}
    if steps:
        kw["steps"] = steps
    t0 = time.perf_counter()
    training.Comparison(sysm, methods, training.make_config(system, **kw)).run()
    together = time.perf_counter() - t0
    apart = 0.0
    for m in methods:
        t0 = time.perf_counter()
        training.Trainer(sysm, m, training.make_config(system, **kw)).run()
        apart += time.perf_counter() - t0
    return together, apart


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default=None, help="comma-separated (default: all)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: all valid)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run")
    ap.add_argument("--steps", type=int, default=None, help="override the recommended steps")
    ap.add_argument("--devices", default=None, help="comma-separated (default: cpu, plus cuda when present)")
    ap.add_argument("--one", nargs=3, metavar=("SYSTEM", "METHOD", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, threads=args.threads, steps=args.steps)))
        return 0

    import torch

    from conserv_core import get_system, methods
    from conserv_core.systems import ALL_SYSTEMS

    systems = args.systems.split(",") if args.systems else list(ALL_SYSTEMS)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    print(f"threads per run: {args.threads}; cores: {os.cpu_count()}; devices: {', '.join(devices)}")
    head = f"{'system':<16} {'method':<9} {'device':<6} {'steps/s':>8} {'total s':>8} {'1st eval s':>10} {'peak MB':>8}  final drift"
    print(head)
    for s in systems:
        valid = methods.valid_methods(get_system(s))
        chosen = [m for m in (args.methods.split(",") if args.methods else valid) if m in valid]
        for m in chosen:
            for d in devices:
                cmd = [sys.executable, __file__, "--one", s, m, d, "--threads", str(args.threads)]
                if args.steps:
                    cmd += ["--steps", str(args.steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    print(f"{s:<16} {m:<9} {d:<6} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(r)
                peak = r.get("peak_cuda_mb", r["peak_rss_mb"])
                drift = " ".join(f"{k}={v:.1e}" for k, v in r["drift"].items() if v is not None)
                print(f"{s:<16} {m:<9} {d:<6} {r['steps_per_s']:>8.0f} {r['total_s']:>8.1f} "
                      f"{r['first_eval_s']:>10.2f} {peak:>8.0f}  {drift}", flush=True)

    if rows:
        print(f"(one-time torch import before the first run: {rows[0]['warm_up_s']:.1f} s, not counted above)")
    print("\ntargets")
    hnn = [r for r in rows if r["system"] == "pendulum" and r["method"] == "hnn" and r["device"] == "cpu"]
    if hnn:
        t = hnn[0]["total_s"]
        print(f"  pendulum hnn default run: {t:.1f} s (target < 10 s): {'PASS' if t < 10 else 'FAIL'}")
    firsts = [r["first_eval_s"] for r in rows if r["first_eval_s"] is not None]
    if firsts:
        worst = max(firsts)
        print(f"  first evaluation record: worst {worst:.2f} s, median {sorted(firsts)[len(firsts) // 2]:.2f} s "
              f"(target < 1 s): {'PASS' if worst < 1 else 'FAIL'}")
    if "pendulum" in systems:
        together, apart = comparison_ratio("pendulum", ["baseline", "hnn", "penalty"], args.threads, args.steps)
        ratio = together / apart
        print(f"  comparison of 3 methods: {together:.1f} s vs {apart:.1f} s as single runs, ratio {ratio:.2f} "
              f"(target <= 1.1): {'PASS' if ratio <= 1.1 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
