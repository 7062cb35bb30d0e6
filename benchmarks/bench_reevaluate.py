"""What one move of the out-of-distribution slider costs in the engine, per method, on the
default demo (pendulum; the dashboard's settings): the trained models evaluated again at
a new ``ood_factor`` (``training.reevaluate``), with no server and no browser.

Printed, interleaved in one process so the ratios survive a noisy machine:

* per method, the seconds of a re-evaluation at a new factor, with the HNN's field as
  autograd's gradient of H and as the written-out one (``mlp.trunk_gradient``);
* the second method's job at the same factor, with the kept problem (what a worker that
  takes two of a move's jobs does) and with a fresh build.

Usage::

    python benchmarks/bench_reevaluate.py            # 3 repeats
    python benchmarks/bench_reevaluate.py --repeats 5
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch

from conserv_core import claims, get_system, training
from conserv_core.models import hamiltonian


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    setting = claims.live_setting(system="pendulum")
    sysm = get_system(setting.system, **setting.system_params)
    cfg = training.make_config(setting.system, **{**setting.config, "device": "cpu"})
    t0 = time.perf_counter()
    result = training.Comparison(sysm, list(setting.methods), cfg).run()
    print(f"default demo: {', '.join(setting.methods)}; {cfg.steps} steps, horizon {cfg.horizon}; "
          f"trained in {time.perf_counter() - t0:.1f} s")
    weights = {k: (tr.step_count, training.model_state(tr)) for k, tr in result.trainers.items()}

    fast_forward = hamiltonian.HamiltonianNN.forward

    def autograd_forward(self, z, t=None):
        return hamiltonian.hamiltonian_vector_field(self.hamiltonian, z)

    times: dict[str, list[float]] = collections.defaultdict(list)
    factor = 4.0
    for _ in range(args.repeats):
        for mode in ("autograd", "written-out"):
            hamiltonian.HamiltonianNN.forward = autograd_forward if mode == "autograd" else fast_forward
            for k in setting.methods:
                factor += 0.5  # a new factor each time: nothing kept
                t = time.perf_counter()
                training.reevaluate(sysm, cfg, {k: weights[k]}, ood_factor=factor)
                times[f"{k} ({mode} ∇H)" if k == "hnn" else k].append(time.perf_counter() - t)
        hamiltonian.HamiltonianNN.forward = fast_forward
        first, second = setting.methods[0], setting.methods[-1]
        factor += 0.5
        training.reevaluate(sysm, cfg, {first: weights[first]}, ood_factor=factor)
        t = time.perf_counter()
        training.reevaluate(sysm, cfg, {second: weights[second]}, ood_factor=factor)
        times[f"{second}, problem kept"].append(time.perf_counter() - t)
        training._REEVALUATED.clear()
        t = time.perf_counter()
        training.reevaluate(sysm, cfg, {second: weights[second]}, ood_factor=factor)
        times[f"{second}, problem rebuilt"].append(time.perf_counter() - t)

    print(f"\nre-evaluation at a new factor, median of {args.repeats} (s; one thread):")
    for name, ts in times.items():
        print(f"  {name:32s} {statistics.median(ts):.3f}")
    a, b = (statistics.median(times[f"hnn ({m} ∇H)"]) for m in ("autograd", "written-out"))
    print(f"\nHNN re-evaluation, autograd ÷ written-out: {a / b:.2f}x")


if __name__ == "__main__":
    main()
