"""How fast the ground truth is: training data and reference solvers of every system.

For each system in ``ALL_SYSTEMS``:

* the time to generate its default training data set (``sample_data()`` on a freshly
  built system with default parameters), judged against a target (< 2 s on a 2-core
  machine: the dashboard generates it when a user presses Train). "cold" is the first call,
  including any solve the system caches (the flow solves once per parameter set);
  "warm" the best of a few repeats;
* the reference solver's throughput: ODE systems in trajectory-steps per second of the
  reference RK4 (batch of the default ``n_traj``, and a single trajectory), n-body for
  N = 2 ... 8; the flow's pseudo-spectral IF-RK4 in steps per second at 64², 128², 256².

Usage::

    python benchmarks/bench_systems.py                # one torch thread (the default)
    python benchmarks/bench_systems.py --threads 2 --systems pendulum,nbody
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from typing import Callable

import torch

from conserv_core.systems import ALL_SYSTEMS, get_system

#: parameter sweeps for the solver throughput: (parameter, values, label); other systems
#: are timed at their defaults
SWEEPS: dict[str, tuple[str, list, str]] = {
    "nbody": ("n_bodies", list(range(2, 9)), "N = {}"),
    "flow": ("grid", [64, 128, 256], "grid {}²"),
}
#: reference steps per timed ODE rollout
ODE_STEPS = 200


def rate(fn: Callable[[], object], min_time: float) -> float:
    """Calls per second of ``fn``, calling it until ``min_time`` has passed (at least
    twice; a first warm-up call is not counted)."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and calls >= 2:
            return calls / elapsed


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- training data ----------------------------------------------------------------------------
def data_times(key: str, repeats: int) -> tuple[float, float]:
    """``(cold, warm)`` seconds for the default training data of ``key``."""
    sysm = get_system(key)
    cold = timed(lambda: sysm.sample_data(seed=0))
    warm = min(timed(lambda: sysm.sample_data(seed=0)) for _ in range(repeats))
    return cold, warm


# -- reference solvers ------------------------------------------------------------------------
def ode_throughput(sysm, batch: int, min_time: float) -> tuple[float, str]:
    """Trajectory-steps/s of ``reference_rollout`` at the system's reference step."""
    z0 = sysm.sample_initial(batch, seed=0)
    span = ODE_STEPS * sysm.reference_dt
    t = torch.tensor([0.0, span], dtype=torch.float64)
    return rate(lambda: sysm.reference_rollout(z0, t), min_time) * ODE_STEPS * batch, "traj-steps/s"


def field_throughput(sysm, min_time: float) -> tuple[float, str]:
    """Steps/s of the flow solver: the IF-RK4 step ``Flow.solve`` takes (its public
    :class:`~conserv_core.systems.flow.SpectralGrid`), at the CFL step of the initial field."""
    grid = sysm.spectral
    w_hat = grid.mask * grid.forward(sysm.initial_vorticity())
    dt = grid.max_dt(w_hat)
    dt = 0.01 if math.isinf(dt) else dt
    return rate(lambda: grid.step(w_hat, dt, sysm.viscosity), min_time), "steps/s"


def solver_rows(key: str, min_time: float) -> list[tuple[str, str, str, str]]:
    """``(system, variant, throughput, unit)`` rows for one system."""
    cls = ALL_SYSTEMS[key]
    name, values, label_fmt = SWEEPS.get(key, (None, [None], "defaults"))
    rows = []
    for value in values:
        sysm = get_system(key, **({} if name is None else {name: value}))
        label = label_fmt.format(value)
        if cls.kind == "ode":
            for batch in (sysm.n_traj, 1):
                speed, unit = ode_throughput(sysm, batch, min_time)
                rows.append((key, f"{label}, batch {batch}", f"{speed:,.0f}", unit))
        elif hasattr(sysm, "spectral"):
            speed, unit = field_throughput(sysm, min_time)
            rows.append((key, label, f"{speed:,.1f}", unit))
        else:
            rows.append((key, label, "n/a", "no solver benchmark for this field system"))
    return rows


# -- output -----------------------------------------------------------------------------------
def table(header: tuple[str, ...], rows: list[tuple], right: set[int]) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r):
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return "  ".join(padded).rstrip()

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                        help="comma-separated registry keys (default: all)")
    parser.add_argument("--target", type=float, default=2.0,
                        help="seconds allowed for a default training data set (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats of the data timing")
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds spent timing each throughput (default 0.5)")
    args = parser.parse_args(argv)

    keys = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ALL_SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; valid: {', '.join(ALL_SYSTEMS)}")
    if args.threads < 1 or args.repeats < 1 or args.min_time <= 0:
        parser.error("--threads and --repeats must be >= 1 and --min-time > 0")
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}")
    print(f"\nDefault training data (target < {args.target:g} s, set for a 2-core machine)")
    rows, failed = [], []
    for key in keys:
        cold, warm = data_times(key, args.repeats)
        ok = cold < args.target
        failed += [] if ok else [key]
        rows.append((key, ALL_SYSTEMS[key].kind, f"{cold:.3f}", f"{warm:.3f}", "PASS" if ok else "FAIL"))
    print(table(("system", "kind", "cold (s)", "warm (s)", "target"), rows, right={2, 3}))

    print("\nReference solver throughput")
    rows = [row for key in keys for row in solver_rows(key, args.min_time)]
    print(table(("system", "variant", "throughput", "unit"), rows, right={2}))
    if failed:
        print(f"\nFAIL: {', '.join(failed)} over the {args.target:g} s data target")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
