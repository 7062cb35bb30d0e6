"""What a state-step costs, per model and per number of bodies: the measurements behind
the cost factors in :mod:`conserv_core.budget` (``Model.cost_per_state``).

The budget counts work in state-steps priced at one unit, the default pendulum MLP (an
RK4 step of one state; a training sample through one optimisation step). A model that
costs more per state, such as the symmetric HNN whose energy sums a network over all
N(N − 1)/2 body pairs, must say so, or a 64-body run is priced like a 2-body one and
holds a worker for an hour. This times, on one thread, in the run's float32:

* a rollout step: one RK4 step of 32 states (the trainer's 2·n_test test cases) under
  ``torch.no_grad()``, as ``problems.Problem.rollout`` takes it;
* a training step: one optimisation step (forward, MSE, backward, Adam) of a 512 batch
  (the default ``batch_size``), as ``Trainer.step`` takes it;

for every distinct model on n-body at N = 2, 3, 4, 8, 16 (width 128, the n-body
default) and for the true n-body field, and prints each in ms and as a ratio to the
unit measured in the same run, beside the budget's prediction (``pred``). The whole run
takes about a minute on one core.

    python benchmarks/bench_budget.py
    python benchmarks/bench_budget.py --bodies 2,8 --reps 3
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from conserv_core import budget, integrators, methods, models, training
from conserv_core.systems import get_system

#: the trainer's test cases (2 · n_test) and training batch
ROLLOUT_BATCH = 32
TRAIN_BATCH = 512


def _best(fn, reps: int, inner: int) -> float:
    """The best of ``reps`` means over ``inner`` calls, in ms (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best * 1e3


def _model(system, key: str, config):
    model = methods.get_method(key).build_model(system, config)
    models.init_weights(model, torch.Generator().manual_seed(0))
    return model.to(torch.float32)


def rollout_ms(field, dim: int, reps: int, inner: int) -> float:
    """One RK4 step of ``ROLLOUT_BATCH`` states of ``field(z, t)``, no autograd graph kept."""
    step = integrators.rk4(field, 0.01)
    z = 0.5 * torch.randn(ROLLOUT_BATCH, dim, generator=torch.Generator().manual_seed(1)) + 1.0

    def one():
        with torch.no_grad():
            step(z, 0.0)

    return _best(one, reps, inner)


def train_ms(model, dim: int, reps: int, inner: int) -> float:
    """One optimisation step of a ``TRAIN_BATCH`` batch (forward, MSE, backward, Adam)."""
    g = torch.Generator().manual_seed(2)
    x = 0.5 * torch.randn(TRAIN_BATCH, dim, generator=g) + 1.0
    y = torch.randn(TRAIN_BATCH, dim, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def one():
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()

    return _best(one, reps, inner)


def _arch_methods(system) -> dict[str, str]:
    """One method per distinct model class on ``system`` (penalty and auglag train the
    baseline's MLP; their constraint is priced separately, by ``n_colloc``)."""
    seen: dict[type, str] = {}
    for k in methods.valid_methods(system):
        seen.setdefault(methods.get_method(k).model_class(system), k)
    return {k: k for k in seen.values()}


def _predicted(system, key: str | None) -> tuple[float, float]:
    """The budget's (rollout, training) price per state of ``key`` on ``system``, relative
    to the unit (``key`` None: the true system's field)."""
    if key is None:
        return system.cost_per_state(), float("nan")
    c = methods.get_method(key).cost_per_state(system)
    return c.rollout, c.train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bodies", default="2,3,4,8,16", help="comma-separated numbers of bodies")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (best is kept)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, float32; "
          f"rollout: RK4 step of {ROLLOUT_BATCH} states; train: one step of a {TRAIN_BATCH} batch")
    t_start = time.perf_counter()

    unit_sys = get_system("pendulum")
    unit_cfg = training.make_config("pendulum")
    unit = _model(unit_sys, "baseline", unit_cfg)

    def units() -> tuple[float, float]:
        # the unit again beside every row: on a shared machine the load changes from one
        # row to the next, and a ratio to a unit timed minutes earlier would carry it
        return (rollout_ms(lambda z, t: unit(z, t), unit_sys.state_dim, args.reps, 40),
                train_ms(unit, unit_sys.state_dim, args.reps, 10))

    u_roll, u_train = units()
    truth_unit = rollout_ms(unit_sys.vector_field, unit_sys.state_dim, args.reps, 40)
    print(f"unit (pendulum baseline MLP, width {unit_cfg.width}): rollout {u_roll:.3f} ms, train {u_train:.2f} ms; "
          f"pendulum truth rollout {truth_unit:.3f} ms ({truth_unit / u_roll:.2f} units)")
    print(f"{'N':>3} {'model':<9} {'roll ms':>8} {'roll x':>7} {'pred':>7} {'train ms':>9} {'train x':>8} {'pred':>7}")
    for n in (int(s) for s in args.bodies.split(",")):
        sysm = get_system("nbody", n_bodies=n)
        cfg = training.make_config("nbody")
        dim = sysm.state_dim
        inner = max(2, 40 // n)
        u_roll, u_train = units()
        truth = rollout_ms(sysm.vector_field, dim, args.reps, inner)
        pr, _ = _predicted(sysm, None)
        print(f"{n:>3} {'truth':<9} {truth:>8.3f} {truth / u_roll:>7.1f} {pr:>7.1f}")
        for key in _arch_methods(sysm):
            model = _model(sysm, key, cfg)
            u_roll, u_train = units()
            roll = rollout_ms(lambda z, t, m=model: m(z, t), dim, args.reps, inner)
            tr = train_ms(model, dim, args.reps, max(2, inner // 4))
            pr, pt = _predicted(sysm, key)
            print(f"{n:>3} {key:<9} {roll:>8.3f} {roll / u_roll:>7.1f} {pr:>7.1f} "
                  f"{tr:>9.2f} {tr / u_train:>8.1f} {pt:>7.1f}")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
