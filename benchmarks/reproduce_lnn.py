"""Reproduce the double-pendulum result of "Lagrangian Neural Networks" (Cranmer,
Greydanus, Hoyer, Battaglia, Spergel, Ho, ICLR 2020 workshop) on this engine: baseline vs
LNN, the energy error ``|E(t = 100) − E(0)|`` over the largest potential energy, averaged
over 40 starts from rest at random angles, printed next to the paper's numbers.

The protocol is the paper's (``reproductions/papers.py``: random states as training data,
the true accelerations as targets, the paper's test starts and score); the training budget
is not: the paper trained a 600-wide network for 600 000 steps of 512 states on a GPU,
this script trains a smaller one for a few thousand steps on two CPU cores (see
``benchmarks/RESULTS.md`` for what that costs in accuracy).

Besides the paper's two models it trains the engine's *mechanical* LNN,
``L = ½ q̇ᵀM_θ(q)q̇ − V_θ(q)`` with ``M_θ`` positive definite (``--methods`` picks).

Usage::

    python benchmarks/reproduce_lnn.py                   # seed 0, the default budget
    python benchmarks/reproduce_lnn.py --seeds 0,1,2 --steps 10000 --json lnn.json
    python benchmarks/reproduce_lnn.py --quick           # a third of the steps, horizon 100
"""

from __future__ import annotations

import json
import os
import time

import torch

from reproductions import papers

#: column titles: the paper's two models, then the mechanical form (ours, not in the paper)
TITLES = {"baseline": "baseline", "lnn": "LNN", "lnn_mechanical": "LNN mech."}


def main(argv: list[str] | None = None) -> int:
    p = papers.reproduction_parser(__doc__.split("\n\n")[0], seeds="0")
    p.add_argument("--quick", action="store_true", help="a third of the training steps")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the task's)")
    p.add_argument("--width", type=int, default=None, help="hidden units per layer (default: the task's)")
    p.add_argument("--n-eval", type=int, default=None, help="test starts (the paper: 40)")
    p.add_argument("--methods", default=",".join(papers.LNN_METHODS),
                   type=papers.choice_list(papers.LNN_METHODS),
                   help=f"comma-separated, from {', '.join(papers.LNN_METHODS)} (lnn: the paper's generic "
                        "L(q, q̇); lnn_mechanical: ½q̇ᵀM(q)q̇ − V(q))")
    p.add_argument("--paper-inputs", action="store_true",
                   help="feed the networks wrapped angles, as the paper did, instead of (cos θ, sin θ)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("steps", args.steps), ("width", args.width), ("n_eval", args.n_eval))
                 if v is not None}
    if args.paper_inputs:
        overrides["angle_features"] = False
    task = papers.lnn_task(quick=args.quick, **overrides)
    seeds = args.seeds
    methods = args.methods

    print(papers.machine_banner("LNN double-pendulum reproduction", args.threads), flush=True)
    print(f"  MLP {task.width}×{task.depth} {task.activation}, {task.steps} steps of {task.batch_size} random "
          f"states (|θ̇| ≤ {task.max_speed}), Adam {task.lr:g} cosine, {task.loss} loss, angles fed as "
          f"{'(cos θ, sin θ)' if task.angle_features else 'wrapped θ (the paper)'}; test: {task.n_eval} starts, "
          f"RK4 dt = {task.eval_dt} to t = {task.horizon:g}, scale 3mgl = {task.energy_scale:.1f}", flush=True)
    start = time.perf_counter()
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        for m in methods:
            r = papers.run_lnn(task, m, seed)
            runs[m].append(r)
            print(f"  {m:14} seed {seed}: trained in {r['train_seconds']:.0f} s, rollouts {r['rollout_seconds']:.0f} s; "
                  f"|ΔE|/Vmax mean {r['energy_error']:.2e}, median {r['energy_error_median']:.2e}, "
                  f"blown up {r['blown_up']}/{task.n_eval}; test {task.loss} {r['test_loss']:.3f}", flush=True)

    rows = [("energy_error", "|ΔE(t=100)| / max potential, mean"),
            ("energy_error_median", "  median over starts"),
            ("blown_up", "rollouts that ran away (|ΔE| > 10 Vmax)"),
            ("test_loss", f"test {task.loss} loss on θ̈"),
            ("truth_energy_error", "the truth under the same RK4 (floor)"),
            ("train_seconds", "training wall time, s per run")]
    header = "".join(f"{TITLES[m] + ' (ours)':>20}" + (f"{TITLES[m] + ' (paper)':>17}" if m in papers.LNN_REPORTED else "")
                     for m in methods)
    print(f"\n{'':40}{header}")
    for key, label in rows:
        cells = []
        for m in methods:
            mean, spread = papers.mean_spread([float(r[key]) for r in runs[m]])
            cells.append(f"{mean:>20.2e}" if len(seeds) == 1 else f"{f'{mean:.2e} ± {spread:.1e}':>20}")
            if m in papers.LNN_REPORTED:
                cells.append(f"{papers.LNN_REPORTED[m]:>17.2e}" if key == "energy_error" else " " * 17)
        print(f"{label:40}" + "".join(cells))
    if "baseline" in runs:
        for m in [m for m in methods if m != "baseline"]:
            ratio = [r_l["energy_error"] / r_b["energy_error"] for r_b, r_l in zip(runs["baseline"], runs[m])]
            paper = papers.LNN_REPORTED["lnn"] / papers.LNN_REPORTED["baseline"]
            print(f"{'ratio ' + TITLES[m] + ' / baseline, mean':40}{papers.mean_spread(ratio)[0]:>20.2e}"
                  f"   (paper, LNN / baseline: {paper:.2e})")
    total = time.perf_counter() - start
    print(f"\ntotal wall time {total:.0f} s ({total / 60:.1f} min); load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seeds": seeds, "task": {k: v for k, v in vars(task).items() if k != "system"},
                       "runs": runs, "reported": papers.LNN_REPORTED, "wall_seconds": total}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
