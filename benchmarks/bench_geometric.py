"""What exactness in discrete time costs: the discrete gradient and projection against RK4.

Per rollout step, for the batch the trainer rolls out (``2 × n_test = 32`` test starts:
16 in distribution, 16 at ``ood_factor = 3``), under ``torch.no_grad()``, one torch
thread, best of 3, the methods of a row group taking turns within each repeat:

* ``discrete_gradient`` on an untrained HNN (its learned H: the fixed-point solve) and
  on the true system (which declares a separable energy: the Newton solve, and beside it
  the general fixed-point solve it used before), against RK4 on the same field, with the
  mean iterations (evaluations of the fixed-point map) per step;
* RK4 + :class:`~conserv_core.integrators.Projection` (tol 1e-10, the trainer's default)
  on an untrained MLP, against plain RK4 on it, with the mean Newton iterations per
  step: onto the energy (pendulum), onto energy, linear and angular momentum (n-body),
  with the system's closed-form gradients as the trainer uses them.

The models have the width the trainer gives each system (``System.recommended``: 64
for the pendulum, 128 for n-body), depth 2: the fields a user's run rolls out at every
evaluation. On the pendulum and n-body with N = 8 (state 32), in float32 and float64.
The loop is :func:`~conserv_core.integrators.rollout`'s (one step, then the
projection), written out to read the iteration counts.

The true system is rolled out once per comparison (the floor the curves are read
against), not at every evaluation: its rows also give the seconds that one rollout
takes at the system's default horizon. No assertions: it prints a table.

Usage::

    python benchmarks/bench_geometric.py               # both systems, both dtypes
    python benchmarks/bench_geometric.py --steps 100 --repeats 3 --systems pendulum
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from conserv_core import integrators, models, training
from conserv_core.systems import get_system

#: the systems benchmarked: key -> (parameters, invariants projected onto)
SYSTEMS = {
    "pendulum": ({}, ["energy"]),
    "nbody": ({"n_bodies": 8}, ["energy", "momentum", "angular_momentum"]),
}
N_TEST = 16  # the trainer's default: 2 × 16 = 32 test starts
OOD_FACTOR = 3.0
PROJ_TOL = 1e-10


def width(key: str) -> int:
    """The hidden width a run on ``key`` gets by default."""
    return training.recommended(key).get("width", training.TrainConfig.param["width"].default)


def untrained(arch: str, state_dim: int, dtype: torch.dtype, width: int, seed: int = 0) -> torch.nn.Module:
    model = models.build(arch, state_dim=state_dim, dof=state_dim // 2, width=width, depth=2, activation="tanh")
    models.init_weights(model, torch.Generator().manual_seed(seed))
    return model.to(dtype).eval()


def starts(sysm, dtype: torch.dtype) -> torch.Tensor:
    """The trainer's test starts (seed 0): ``(2 N_TEST, D)``."""
    z_in = sysm.sample_initial(N_TEST, seed=10_000)
    z_ood = sysm.sample_initial(N_TEST, seed=20_000, scale=OOD_FACTOR)
    return torch.cat([z_in, z_ood]).to(dtype)


def per_step(makes, z0: torch.Tensor, n_steps: int, repeats: int) -> list[tuple[float, float]]:
    """For each of ``makes``: best-of-``repeats`` seconds per step of ``n_steps`` steps
    from ``z0``, and the mean iterations per step (what ``make_step()``'s
    ``iterations()`` reports, 0 if none). The methods take turns within each repeat, so
    a burst of load from the other engineers on these 2 cores hits them alike.

    Each ``make_step()`` returns ``(step(z) -> z, iterations() -> int)``.
    """
    best = [float("inf")] * len(makes)
    its = [0.0] * len(makes)
    for _ in range(repeats):
        for k, make_step in enumerate(makes):
            step, iterations = make_step()
            total = 0
            with torch.no_grad():
                z = step(z0)  # warm-up, not counted
                z = z0
                start = time.perf_counter()
                for _ in range(n_steps):
                    z = step(z)
                    total += iterations()
                elapsed = time.perf_counter() - start
            if not torch.isfinite(z).all():
                raise RuntimeError("the rollout blew up: the timing would not be of real steps")
            best[k] = min(best[k], elapsed / n_steps)
            its[k] = total / n_steps
    return list(zip(best, its))


def plain(f, dt: float, method: str = "rk4", **options):
    def make():
        step = integrators.get(method)(f, dt, **options)
        return (lambda z: step(z, 0.0)), (lambda: getattr(step, "iterations", 0))
    return make


def projected(f, dt: float, proj: integrators.Projection, z0: torch.Tensor, scales):
    target = proj.start(z0, scales)

    def make():
        step = integrators.rk4(f, dt)
        return (lambda z: proj(step(z, 0.0), target)), (lambda: proj.last_iterations)
    return make


def rows_for(key: str, dtype: torch.dtype, n_steps: int, repeats: int) -> list[tuple]:
    params, names = SYSTEMS[key]
    sysm = get_system(key, **params)
    dt = sysm.dt
    z0 = starts(sysm, dtype)
    label = f"{key} (D={sysm.state_dim})"
    out = []
    w = width(key)
    horizon_steps = int(round(sysm.horizon / dt))

    def pair(what, base_make, new_makes, it_name):
        """``new_makes``: ``(method name, make)`` pairs, timed in turn with the base."""
        timed = per_step([base_make] + [make for _, make in new_makes], z0, n_steps, repeats)
        t_base = timed[0][0]
        for (new_name, _), (t_new, its) in zip(new_makes, timed[1:]):
            out.append((label, str(dtype).replace("torch.", ""), what, new_name, t_base, t_new, its, it_name))

    hnn = untrained("hnn", sysm.state_dim, dtype, w)
    pair(f"HNN w{w}", plain(hnn, dt), [("discrete_gradient", plain(hnn.gradient_form, dt, "discrete_gradient"))],
         "fixed-point")
    # the truth declares a separable energy: Newton (the default), and the general
    # fixed-point solve it used before, for the before/after in one run
    pair("true system", plain(sysm.vector_field, dt),
         [("dg, fixed-point", plain(sysm.gradient_form, dt, "discrete_gradient", solver="fixed_point")),
          ("dg, Newton", plain(sysm.gradient_form, dt, "discrete_gradient"))], "evaluations")
    t_rk4, t_dg = out[-1][4], out[-1][5]
    out[-1] = out[-1][:7] + (out[-1][7] + f"; once per comparison, {horizon_steps} steps: "
                             f"{horizon_steps * t_rk4:.2f} s → {horizon_steps * t_dg:.2f} s",)
    mlp = untrained("mlp", sysm.state_dim, dtype, w)
    inv = sysm.invariants()
    # as the trainer does for a canonical model: the invariants' closed-form gradients
    proj = integrators.Projection({n: inv[n] for n in names}, tol=PROJ_TOL,
                                   evaluate=sysm.invariants_and_gradients(names))
    scales = {n: sysm.invariant_scale(n, z0) for n in names}
    onto = "+".join({"energy": "E", "momentum": "P", "angular_momentum": "L"}[n] for n in names)
    pair(f"MLP w{w}", plain(mlp, dt), [(f"rk4 + proj({onto})", projected(mlp, dt, proj, z0, scales))], "Newton")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, of: " + ", ".join(SYSTEMS))
    ap.add_argument("--dtypes", default="float32,float64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, "
          f"load average {load:.2f}; batch {2 * N_TEST}, {args.steps} steps, best of {args.repeats}; "
          f"models untrained, depth 2")
    header = f"{'system':<15} {'dtype':<8} {'field':<14} {'method':<20} {'rk4 ms/step':>11} {'ms/step':>8} " \
             f"{'× rk4':>6} {'iters/step':>14}"
    print(header)
    print("-" * len(header))
    for key in args.systems.split(","):
        for name in args.dtypes.split(","):
            for row in rows_for(key, getattr(torch, name), args.steps, args.repeats):
                label, dtype, what, method, t_base, t_new, its, it_name = row
                print(f"{label:<15} {dtype:<8} {what:<14} {method:<20} {1e3 * t_base:>11.3f} {1e3 * t_new:>8.3f} "
                      f"{t_new / t_base:>6.1f} {its:>5.2f} {it_name:<8}", flush=True)


if __name__ == "__main__":
    main()
