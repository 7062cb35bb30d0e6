"""What the Leray projection costs in a dye rollout.

On the default flow (grid 64, 500 parcels, default horizon and dt, RK4), carries the dye
through an untrained ``field_mlp`` baseline twice, the way the trainer's evaluation does:

* raw: the network's velocity, and its divergence by autograd
  (:func:`conserv_core.models.divfree.divergence`);
* Leray: :class:`conserv_core.leray.LerayField`, which samples the network on the 64²
  grid once per new stage time (an LRU keyed by float time), projects it spectrally and
  evaluates the Fourier series at the parcels (divergence included, no autograd).

Prints the best-of-``--repeats`` wall time per rollout step of each, their ratio, how
many times the Leray field sampled the network (per step; 2 is the floor for RK4: the
mid-step time and the step end, the start being the previous end) and the mass drift of
each rollout. No assertions.

Usage::

    python benchmarks/bench_leray.py                  # one torch thread, float32 and float64
    python benchmarks/bench_leray.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import time

import torch

from conserv_core import models
from conserv_core.leray import LerayField
from conserv_core.models import divfree
from conserv_core.systems import get_system


def carry_raw(flow, model, xy0):
    def vel(xy, t):
        with torch.no_grad():
            return model(xy, t)

    def div(xy, t):
        return divfree.divergence(model, xy, t).detach()

    return flow.carry(vel, div, xy0, 0.0, flow.horizon, flow.dt)


def carry_leray(flow, model, xy0, dtype):
    lf = LerayField(model, flow, dtype=dtype)  # fresh: no coefficients cached from a previous run
    out = flow.carry(lf.velocity, lf.divergence, xy0, 0.0, flow.horizon, flow.dt)
    return out, lf.n_samples


def best_time(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rollouts per variant; the best is kept")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    flow = get_system("flow")
    flow.snapshot_vorticity()  # the truth's solve is not part of either rollout
    print(f"flow: grid {flow.grid}, {flow.n_parcels} parcels, horizon {flow.horizon}, dt {flow.dt}, RK4; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'dtype':8s} {'raw ms/step':>12s} {'Leray ms/step':>14s} {'ratio':>6s} {'samples/step':>13s} "
          f"{'|M-1| raw':>10s} {'|M-1| Leray':>12s}")
    for dtype in (torch.float32, torch.float64):
        model = models.build("field_mlp", generator=torch.Generator().manual_seed(0)).to(dtype=dtype)
        xy0 = flow.dye_patch(dtype=dtype)
        t_raw, (t_axis, _, logj_raw) = best_time(lambda: carry_raw(flow, model, xy0), args.repeats)
        t_ler, ((_, _, logj_ler), samples) = best_time(lambda: carry_leray(flow, model, xy0, dtype), args.repeats)
        n_steps = len(t_axis) - 1
        drift_raw = float((flow.mass(logj_raw.double()) - 1).abs().max())
        drift_ler = float((flow.mass(logj_ler.double()) - 1).abs().max())
        print(f"{str(dtype).removeprefix('torch.'):8s} {1e3 * t_raw / n_steps:12.2f} {1e3 * t_ler / n_steps:14.2f} "
              f"{t_ler / t_raw:6.2f} {samples / n_steps:13.2f} {drift_raw:10.2e} {drift_ler:12.2e}")
    print(f"({n_steps} RK4 steps per rollout, best of {args.repeats})")


if __name__ == "__main__":
    main()
