"""The damped-pendulum lesson, measured: does the port-Hamiltonian network's energy
follow the truth's better than the HNN's and the baseline's, seed after seed?

For each seed, the preset's three methods are trained side by side (a
:class:`~conserv_core.training.Comparison`, as ``python -m conserv_core compare --preset
damped-pendulum`` does), and from each method's last evaluation the energy curve
``ev.drift["energy"].rel`` (for a damped system ``|E_model(t) − E_true(t)| / s``) gives
its largest value over the rollout horizon and its final one. Printed per seed: those
numbers, each model's power (the rate it drains the true energy along the true orbits)
over the truth's, the phnn's learned damping ``D_θ`` (mean over the test states; the truth's is
``b m l²``), the margin ``phnn max / min(baseline max, hnn max)`` (below 1: the lesson
holds) and the wall time of the comparison.

    python benchmarks/bench_damped.py                       # seeds 0-4, the preset as it is
    PYTHONPATH=. python benchmarks/bench_damped.py          # in a worktree (editable install elsewhere)
    python benchmarks/bench_damped.py --seeds 0,1 --set steps=2000 --param damping=0.5
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from conserv_core import training
from conserv_core.presets import get_preset
from conserv_core.systems import get_system


def _value(s: str):
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def _pairs(items: list[str]) -> dict:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k.strip()] = _value(v.strip())
    return out


def run_seed(preset, seed: int, config: dict, params: dict) -> dict:
    system = get_system(preset.system, **{**preset.system_params, **params})
    cfg = training.make_config(preset.system, **{**preset.config, **config, "seed": seed})
    t0 = time.perf_counter()
    comp = training.Comparison(system, list(preset.methods), cfg).run()
    wall = time.perf_counter() - t0
    row: dict = {"seed": seed, "wall": wall, "methods": {}}
    for key, tr in comp.trainers.items():
        curve = tr.last_eval.drift["energy"]
        view = tr.last_eval.view
        row["methods"][key] = {"max": max(curve.rel), "final": curve.final, "status": tr.status,
                               "mse": tr.last_eval.test_mse,
                               "power": view.get("power", float("nan")) / view.get("power_true", float("nan"))}
        if key == "phnn":
            # the learned D_θ along the truth's in-distribution orbits
            z = tr.problem.z_true[:, :cfg.n_test].reshape(-1, system.state_dim)
            with torch.no_grad():
                row["d_learned"] = float(tr.model.damping(z).mean())
    row["d_true"] = system.damping * system.inertia
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="damped-pendulum")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides, key=value")
    ap.add_argument("--param", nargs="*", default=[], help="system parameter overrides, key=value")
    args = ap.parse_args()
    preset = get_preset(args.preset)
    config, params = _pairs(args.set), _pairs(args.param)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"preset {preset.name}: config {dict(preset.config, **config)}, "
          f"system {dict(preset.system_params, **params)}; load average {load:.2f}")
    keys = list(preset.methods)
    head = f"{'seed':>4} " + " ".join(f"{k + ' max':>11} {k + ' fin':>11}" for k in keys)
    head += "".join(f" {'P/P ' + k[:4]:>9}" for k in keys)
    head += f" {'D phnn':>7} {'D true':>7} {'margin':>7} {'phnn<both':>9} {'wall s':>7}"
    print(head, flush=True)
    wins = 0
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        r = run_seed(preset, seed, config, params)
        m = r["methods"]
        others = min(v["max"] for k, v in m.items() if k != "phnn")
        margin = m["phnn"]["max"] / others
        win = margin < 1.0
        wins += win
        line = f"{seed:>4} " + " ".join(f"{m[k]['max']:>11.2e} {m[k]['final']:>11.2e}" for k in keys)
        line += "".join(f" {m[k]['power']:>9.2f}" for k in keys)
        line += f" {r.get('d_learned', float('nan')):>7.3f} {r['d_true']:>7.3f} {margin:>7.2f} {str(win):>9}"
        line += f" {r['wall']:>7.1f}"
        print(line, flush=True)
    print(f"phnn below both in {wins} of {len(args.seeds.split(','))} seeds")


if __name__ == "__main__":
    main()
