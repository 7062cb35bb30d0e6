"""Reproduce Table 1 of "Hamiltonian Neural Networks" (Greydanus, Dzamba, Yosinski,
NeurIPS 2019) on this engine: ideal mass-spring, ideal pendulum and two-body problem,
baseline MLP vs HNN, printed next to the paper's numbers.

The settings are the paper's and its public code's (``reproductions/papers.py`` holds
them, with the reasons for every difference): 50 noisy trajectories and 2 000 full-batch
Adam steps for the 1-D tasks, 1 000 orbits and 10 000 steps of 200 for the two-body task,
MLP 200-200 tanh, energy MSE along 15 long rollouts. Every number is the mean ± the
standard deviation over the seeds (each seed: new data, new weights, new test starts).

Usage::

    python benchmarks/reproduce_hnn.py                    # all three tasks, seeds 0, 1, 2
    python benchmarks/reproduce_hnn.py --quick            # the two-body task at 1/5 size
    python benchmarks/reproduce_hnn.py --tasks spring --seeds 0,1,2,3,4 --json hnn.json
"""

from __future__ import annotations

import json
import os
import time

import torch

from reproductions import papers

METHODS = ("baseline", "hnn")
ROWS = [
    ("train_loss", "train loss"),
    ("test_loss", "test loss"),
    ("energy_mse", "energy MSE"),
    ("literal_energy_mse", "energy MSE on q²+p² (the paper's notebook)"),
    ("truth_energy_mse", "energy MSE of the truth under RK4 (floor)"),
    ("train_seconds", "training wall time, s per run"),
]


def fmt(mean: float, spread: float | None = None) -> str:
    if spread is None:
        return f"{mean:.2e}"
    return f"{mean:.2e} ± {spread:.1e}"


def table(task: papers.HNNTask, runs: dict[str, list[dict]]) -> str:
    """One task's rows: ours (mean ± std over seeds) next to the paper's (value ± its
    bootstrap error), baseline and HNN."""
    paper = papers.HNN_REPORTED[task.key]
    head = f"{'':44} {'baseline (ours)':>20} {'baseline (paper)':>18} {'HNN (ours)':>20} {'HNN (paper)':>18}"
    lines = [head]
    for key, label in ROWS:
        if key not in runs["baseline"][0]:
            continue
        cells = []
        for m in METHODS:
            cells.append(fmt(*papers.mean_spread([r[key] for r in runs[m]])))
            ref = paper[m].get(key)
            cells.append(fmt(*ref) if ref else "")
        lines.append(f"{label:44} {cells[0]:>20} {cells[1]:>18} {cells[2]:>20} {cells[3]:>18}")
    ours = {m: papers.mean_spread([r["energy_mse"] for r in runs[m]])[0] for m in METHODS}
    per_seed = [r_h["energy_mse"] / r_b["energy_mse"] for r_b, r_h in zip(runs["baseline"], runs["hnn"])]
    paper_ratio = paper["hnn"]["energy_mse"][0] / paper["baseline"]["energy_mse"][0]
    lines.append(f"{'energy MSE ratio HNN / baseline (of the means)':44} {'':>20} {'':>18} "
                 f"{fmt(ours['hnn'] / ours['baseline']):>20} {fmt(paper_ratio):>18}")
    lines.append(f"{'  per seed':44} {'':>20} {'':>18} {f'{min(per_seed):.1e} – {max(per_seed):.1e}':>20}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = papers.reproduction_parser(__doc__.split("\n\n")[0], seeds="0,1,2")
    p.add_argument("--tasks", default=",".join(papers.HNN_TASKS), type=papers.choice_list(papers.HNN_TASKS),
                   help="comma-separated: spring,pendulum,two_body")
    p.add_argument("--quick", action="store_true", help="two-body with 200 orbits and 2 000 steps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = args.seeds
    keys = args.tasks

    print(papers.machine_banner("HNN Table 1 reproduction", args.threads), flush=True)
    start = time.perf_counter()
    out = {"seeds": seeds, "quick": args.quick, "tasks": {}}
    for key in keys:
        task = papers.hnn_task(key, quick=args.quick)
        t_task = time.perf_counter()
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for seed in seeds:
            for m in METHODS:
                r = papers.run_hnn(task, m, seed)
                runs[m].append(r)
                print(f"  {key:9} {m:8} seed {seed}: trained {task.steps} steps in {r['train_seconds']:.1f} s, "
                      f"energy MSE {r['energy_mse']:.2e}", flush=True)
        wall = time.perf_counter() - t_task
        print(f"\n{task.title}: {len(seeds)} seeds, {task.steps} steps, "
              f"{'full batch' if task.batch_size is None else f'batch {task.batch_size}'}; "
              f"task wall time {wall:.0f} s\n{table(task, runs)}\n", flush=True)
        out["tasks"][key] = {"runs": runs, "wall_seconds": wall, "reported": papers.HNN_REPORTED[key]}
    total = time.perf_counter() - start
    out["wall_seconds"] = total
    print(f"total wall time {total:.0f} s ({total / 60:.1f} min); load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
