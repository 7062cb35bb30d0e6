"""The symmetric HNN (``shnn``) on many bodies: rollout throughput at N = 8, 16, 32, 64.

One model (untrained, width 128, depth 2: the n-body default) evaluates any number of
bodies. Its cost grows with the number of pairs, N(N − 1)/2, each a row through the pair
network, where the plain HNN's grows with its input width only. Printed per N and
device: RK4 rollout steps per second for a batch of 32 states (the trainer's test set),
in float32 under ``torch.no_grad()``, with the HNN at the same N beside it, and the
momentum drift over the timed rollout (at round-off for shnn at every N).

On CUDA (when present) the same rows are printed again, with the speed-up over the CPU.

    python benchmarks/bench_symmetric.py
    python benchmarks/bench_symmetric.py --bodies 8,64 --steps 50
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from conserv_core import integrators, models
from conserv_core.systems import get_system


def rate(model, z0: torch.Tensor, dt: float, steps: int) -> tuple[float, torch.Tensor]:
    """RK4 steps per second from ``z0`` (best of 3), and the last rollout's final state."""
    step = integrators.rk4(model, dt)
    best = float("inf")
    with torch.no_grad():
        z = step(z0, 0.0)  # warm-up
        for _ in range(3):
            z = z0
            if z0.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                z = step(z, 0.0)
            if z0.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return steps / best, z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", default="8,16,32,64")
    ap.add_argument("--steps", type=int, default=30, help="timed RK4 steps per repeat")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"load average {load:.2f}; devices: {', '.join(devices)}; batch 32, float32, width 128")
    print(f"{'N':>3} {'pairs':>6} {'device':<6} {'shnn steps/s':>13} {'hnn steps/s':>12} "
          f"{'shnn P drift':>13} {'vs CPU':>7}")
    cpu_rate: dict[int, float] = {}
    for device in devices:
        for n in (int(v) for v in args.bodies.split(",")):
            sysm = get_system("nbody", n_bodies=n)
            z0 = sysm.sample_initial(32, seed=0).float().to(device)
            x = sysm.sample_initial(256, seed=1)
            y = sysm.vector_field(x)
            out = {}
            for arch in ("shnn", "hnn"):
                model = models.build(arch, state_dim=4 * n, width=128, generator=torch.Generator().manual_seed(0))
                model.set_scales(x.float(), y.float())
                model = model.to(device).eval()
                out[arch] = rate(model, z0, sysm.dt, args.steps)
            p0, p1 = (z.reshape(32, 2, n, 2)[:, 1].sum(1) for z in (z0, out["shnn"][1]))
            scale = z0.reshape(32, 2, n, 2)[:, 1].norm(dim=-1).sum(-1)
            drift = float(((p1 - p0).norm(dim=-1) / scale).max())
            if device == "cpu":
                cpu_rate[n] = out["shnn"][0]
            vs = f"{out['shnn'][0] / cpu_rate[n]:.1f}×" if device != "cpu" and n in cpu_rate else "-"
            print(f"{n:>3} {n * (n - 1) // 2:>6} {device:<6} {out['shnn'][0]:>13.0f} {out['hnn'][0]:>12.0f} "
                  f"{drift:>13.1e} {vs:>7}", flush=True)
    if "cuda" not in devices:
        print("no CUDA device here: the GPU rows (and whether N = 64 runs >= 10x the CPU) wait for a machine with one")


if __name__ == "__main__":
    main()
