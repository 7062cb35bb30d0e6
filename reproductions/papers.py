"""Published results, reproduced: HNN Table 1 and the LNN double pendulum.

The two founding papers' headline experiments, with their settings taken from the papers
and their public code, run on this engine's systems, models and integrators:

* Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019, Table 1:
  ideal mass-spring, ideal pendulum and two-body problem, baseline MLP vs HNN: train
  loss, test loss and energy MSE along long rollouts (:func:`hnn_task`, :func:`run_hnn`).
* Cranmer, Greydanus, Hoyer, Battaglia, Spergel, Ho, "Lagrangian Neural Networks", ICLR
  2020 workshop, section 4: the double pendulum, baseline vs LNN, ``|ΔE|`` at ``t = 100``
  over the largest potential energy (:func:`lnn_task`, :func:`run_lnn`).

``benchmarks/reproduce_hnn.py`` and ``benchmarks/reproduce_lnn.py`` run them at full size
and print ours next to the papers' (:data:`HNN_REPORTED`, :data:`LNN_REPORTED`);
``tests/test_reproductions.py`` runs them at reduced size; ``conserv_core/presets.py``
offers live-size versions through the ordinary trainer.

These protocols do not use :class:`~conserv_core.training.Trainer`: the papers train on
their own data layouts (a split by trajectory, fresh random states every step), with the
raw, unnormalised MSE the tables report and no evaluation during training, which the
trainer's dashboard-oriented loop does not offer. The models are the engine's own
(:func:`conserv_core.models.build`), with its input/output normalisation, where the
papers used raw inputs and orthogonal initialisation.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import param
import torch
from torch import nn

from conserv_core import integrators, models
from conserv_core.models import mlp
from conserv_core.systems.base import ODESystem
from conserv_core.systems.double_pendulum import DoublePendulum
from conserv_core.systems.nbody import NBody
from conserv_core.systems.pendulum import Pendulum
from conserv_core.systems.spring import Spring

Tensor = torch.Tensor

# ---------------------------------------------------------------------------------------
# what the papers report
# ---------------------------------------------------------------------------------------
#: HNN paper, Table 1, as (value, ±) in plain units (the table prints them ×10³, and the
#: two-body row ×10⁶); the ± is the paper's bootstrap error of one trained model
HNN_REPORTED: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "spring": {
        "baseline": {"train_loss": (37e-3, 2e-3), "test_loss": (37e-3, 2e-3), "energy_mse": (170e-3, 20e-3)},
        "hnn": {"train_loss": (37e-3, 2e-3), "test_loss": (36e-3, 2e-3), "energy_mse": (0.38e-3, 0.1e-3)},
    },
    "pendulum": {
        "baseline": {"train_loss": (33e-3, 2e-3), "test_loss": (35e-3, 2e-3), "energy_mse": (42e-3, 10e-3)},
        "hnn": {"train_loss": (33e-3, 2e-3), "test_loss": (36e-3, 2e-3), "energy_mse": (25e-3, 5e-3)},
    },
    "two_body": {
        "baseline": {"train_loss": (33e-6, 1e-6), "test_loss": (30e-6, 0.1e-6), "energy_mse": (6.3e-2, 3e-2)},
        "hnn": {"train_loss": (3.0e-6, 0.1e-6), "test_loss": (2.8e-6, 0.1e-6), "energy_mse": (39e-6, 5e-6)},
    },
}

#: LNN paper, double pendulum: mean |ΔE(t = 100)| / max potential energy over 40 starts
#: (the public notebooks print 0.0043 for the LNN and 0.074 for the baseline, the latter
#: over its first 44 starts: the 45th froze their integrator)
LNN_REPORTED: dict[str, float] = {"baseline": 0.074, "lnn": 0.0043}

#: the LNN reproduction's models: the paper's generic ``L_θ(q, q̇)``, and the mechanical
#: form ``½q̇ᵀM_θ(q)q̇ − V_θ(q)`` (ours, not in the paper), both from the engine's
#: :class:`~conserv_core.models.LagrangianNN`
LNN_FORMS: dict[str, str] = {"lnn": "generic", "lnn_mechanical": "mechanical"}
LNN_METHODS = ("baseline", *LNN_FORMS)


# ---------------------------------------------------------------------------------------
# the papers' data, as systems of this engine
# ---------------------------------------------------------------------------------------
class PaperPendulum(Pendulum):
    """The HNN paper's pendulum, ``H = 3(1 − cos q) + p²`` (``m l² = 1/2``, ``m g l = 3``),
    with its initial states: on circles of radius ``r ∈ radius_band`` in the ``(q, p)``
    plane, at a uniform angle. Not registered: the dashboard's pendulum samples energies."""

    key = "hnn_paper_pendulum"
    radius_band = param.Range(default=(1.3, 2.3), bounds=(0.0, 10.0),
                              doc="Initial states on circles of radius r uniform in this band, in the (q, p) plane.")

    def sample_initial(self, n: int, seed: int = 0, scale: float = 1.0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        lo, hi = self.radius_band
        r = (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)) * scale
        phase = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        return torch.stack([r * torch.cos(phase), r * torch.sin(phase)], -1).to(dtype=dtype, device=device)


def paper_pendulum(**params) -> PaperPendulum:
    """``H = 3(1 − cos q) + p²``: unit mass, ``l = 1/√2`` (so ``m l² = 1/2``), ``g = 3√2``."""
    return PaperPendulum(mass=1.0, length=1 / math.sqrt(2), gravity=3 * math.sqrt(2), **params)


class PaperTwoBody(NBody):
    """The HNN paper's two-body task: unit masses and G, no softening, near-circular orbits.

    Body 1 at ``x ∈ U[0.5, 1.5]²``, body 2 at ``−x``, each at the circular speed
    ``1 / (2 sqrt|x|)`` times ``1 + orbit_noise·N(0, 1)`` (one factor per orbit), so the
    centre of mass is at rest at the origin and every orbit turns the same way.
    """

    key = "hnn_paper_two_body"
    orbit_noise = param.Number(default=0.05, bounds=(0.0, 1.0), doc="Relative noise on the circular speed.")
    position_band = param.Range(default=(0.5, 1.5), bounds=(0.01, 100.0),
                                doc="Each coordinate of body 1 uniform in this band.")

    def __init__(self, **params):
        params = {"n_bodies": 2, "softening": 0.0, **params}
        super().__init__(**params)

    def sample_initial(self, n: int, seed: int = 0, scale: float = 1.0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        lo, hi = self.position_band
        x = lo + (hi - lo) * torch.rand(n, 2, generator=g, dtype=torch.float64)  # (n, 2)
        r = x.norm(dim=-1, keepdim=True)  # (n, 1)
        v = torch.stack([-x[:, 1], x[:, 0]], -1) / (2 * r**1.5)
        v = v * (1 + self.orbit_noise * torch.randn(n, 1, generator=g, dtype=torch.float64))
        q = torch.cat([x, -x], -1) * scale  # (n, 4) = (x1, y1, x2, y2)
        p = torch.cat([v, -v], -1) * self.mass * math.sqrt(scale)
        return torch.cat([q, p], -1).to(dtype=dtype, device=device)


def _corner_starts(n: int, seed: int) -> Tensor:
    """The HNN paper's test starts for its 1-D tasks: each of ``q``, ``p`` uniform in
    ``±[0.2, 1.0]`` (``x ∈ U[−0.8, 0.8]``, then moved 0.2 away from 0), ``(n, 2)``."""
    g = torch.Generator().manual_seed(seed)
    x = 1.6 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.8
    return x + 0.2 * torch.sign(x)


# ---------------------------------------------------------------------------------------
# one training loop for every protocol
# ---------------------------------------------------------------------------------------
def fit(model: nn.Module, batches: Callable[[int], tuple[Tensor, Tensor]], predict: Callable[[Tensor], Tensor],
        *, steps: int, lr: float, weight_decay: float = 0.0, loss: str = "mse", cosine: bool = False,
        seed: int = 0, before_step: Callable[[int], None] | None = None) -> float:
    """Adam on ``loss(predict(x), y)`` for ``steps`` steps; returns the wall time in seconds.

    Args:
        batches: ``step -> (x, y)``: the whole set (full batch), a random subset, or fresh
            samples every step.
        predict: ``x -> ŷ``, the model's prediction compared with ``y``.
        loss: ``"mse"`` (mean squared error, the HNN paper) or ``"l1"`` (mean absolute
            error, the LNN paper).
        cosine: anneal the learning rate to 0 along a half cosine.
        seed: unused by the loop itself (the batches and the weights come from generators
            of their own); kept so callers state the run's seed in one place.
        before_step: called with the step number before each step (a schedule).
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    t0 = time.perf_counter()
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        x, y = batches(step)
        err = predict(x) - y
        value = err.pow(2).mean() if loss == "mse" else err.abs().mean()
        if not torch.isfinite(value):
            raise FloatingPointError(f"training diverged at step {step} (loss {float(value)})")
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return time.perf_counter() - t0


def _random_subsets(x: Tensor, y: Tensor, batch_size: int | None, seed: int) -> Callable[[int], tuple[Tensor, Tensor]]:
    """The whole set every step if ``batch_size`` is None or not smaller, else a fresh
    random subset (without replacement) every step, as the HNN paper's two-body code."""
    n = x.shape[0]
    if batch_size is None or batch_size >= n:
        return lambda step: (x, y)
    g = torch.Generator().manual_seed(seed)

    def draw(step: int) -> tuple[Tensor, Tensor]:
        idx = torch.randperm(n, generator=g)[:batch_size]
        return x[idx], y[idx]

    return draw


def _float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy for evaluation rollouts (the papers integrate in float64)."""
    return copy.deepcopy(model).double().eval()


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------------------
# HNN Table 1
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HNNTask:
    """One row of HNN Table 1: the system with the paper's data settings, the training
    settings and the energy-MSE protocol.

    Attributes:
        key, title: ``"spring"``, ``"pendulum"`` or ``"two_body"``, and a name to print.
        system: the truth, built with the paper's parameters, ``n_traj``, ``t_span``,
            ``n_points`` and ``noise`` (Gaussian, on the input states only).
        train_frac: fraction of the trajectories used for training (the first ones; the
            rest is the test set).
        steps, batch_size, lr, weight_decay, width, depth: Adam on the raw MSE;
            ``batch_size=None`` is full batch.
        n_eval, horizon, n_eval_times: the energy MSE is the mean over ``n_eval`` starts
            and ``n_eval_times`` times in ``[0, horizon]`` of ``(E(model) − E(truth))²``.
        eval_dt: RK4 step of the evaluation rollouts (the paper: scipy at rtol 1e-12 or
            1e-9; RK4 at this step is tighter than that on these fields, and the truth's
            own energy MSE at this step is reported as the floor).
        eval_starts: ``(n, seed) -> (n, D)`` the paper's test starts.
        literal_energy: the energy the paper's notebook actually measured, where it is not
            the system's (the pendulum notebook measures ``q² + p²``); None otherwise.
    """

    key: str
    title: str
    system: ODESystem
    train_frac: float
    steps: int
    batch_size: int | None
    weight_decay: float
    n_eval: int
    horizon: float
    n_eval_times: int
    eval_starts: Callable[[int, int], Tensor]
    lr: float = 1e-3
    width: int = 200
    depth: int = 2
    eval_dt: float = 0.01
    literal_energy: Callable[[Tensor], Tensor] | None = None


def _sum_of_squares(z: Tensor) -> Tensor:
    return z.pow(2).sum(-1)


HNN_TASKS = ("spring", "pendulum", "two_body")


def hnn_task(key: str, quick: bool = False, **overrides) -> HNNTask:
    """The paper's settings for one task of Table 1; ``quick`` shrinks the two-body task
    (200 orbits, 2 000 steps) and leaves the other two at full size; ``overrides`` replace
    any field of :class:`HNNTask` (the test suite shrinks everything with them)."""
    if key == "spring":
        task = HNNTask(
            key, "Ideal mass-spring", Spring(k=2.0, mass=0.5, radius_band=(0.1, 1.0), n_traj=50, t_span=3.0,
                                             n_points=30, noise=0.1),
            train_frac=0.5, steps=2000, batch_size=None, weight_decay=1e-4,
            n_eval=15, horizon=20.0, n_eval_times=100, eval_starts=_corner_starts)
    elif key == "pendulum":
        task = HNNTask(
            key, "Ideal pendulum", paper_pendulum(n_traj=50, t_span=3.0, n_points=45, noise=0.1),
            train_frac=0.5, steps=2000, batch_size=None, weight_decay=1e-4,
            n_eval=15, horizon=20.0, n_eval_times=100, eval_starts=_corner_starts,
            literal_energy=_sum_of_squares)
    elif key == "two_body":
        system = PaperTwoBody(n_traj=200 if quick else 1000, t_span=20.0, n_points=50, noise=0.0)
        task = HNNTask(
            key, "Two-body", system, train_frac=0.8, steps=2000 if quick else 10_000, batch_size=200,
            weight_decay=0.0, n_eval=15, horizon=25.0, n_eval_times=500,
            eval_starts=lambda n, seed: system.sample_initial(n, seed=seed))
    else:
        raise ValueError(f"task must be one of {', '.join(HNN_TASKS)}; got {key!r}")
    return replace(task, **overrides)


def hnn_split(task: HNNTask, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The task's data for ``seed``, split by trajectory: ``(x_train, y_train, x_test,
    y_test)``, float32, ``y`` the exact time derivatives at the clean states."""
    data = task.system.sample_data(seed=seed, dtype=torch.float32)
    n_traj = data.z0.shape[0]
    traj = torch.arange(data.x.shape[0]) % n_traj  # sample_data orders points (time, trajectory)
    train = traj < int(round(task.train_frac * n_traj))
    return data.x[train], data.dxdt[train], data.x[~train], data.dxdt[~train]


def hnn_energy_mse(task: HNNTask, vector_field: Callable[[Tensor, float], Tensor] | None, seed: int,
                   energy: Callable[[Tensor], Tensor] | None = None) -> float:
    """The paper's energy metric for a float64 ``vector_field``: roll out from
    ``task.n_eval`` test starts with RK4 at ``task.eval_dt``, and average
    ``(energy(model path) − energy(true path))²`` over starts and ``n_eval_times`` times
    in ``[0, horizon]`` (``energy`` defaults to the system's). A rollout that blows up
    counts as infinite.

    ``vector_field=None`` measures the floor instead: the true field under the same RK4
    against the true energy at the start, which the exact flow keeps.
    """
    sysm = task.system
    energy = sysm.energy if energy is None else energy
    z0 = task.eval_starts(task.n_eval, 1_000 + seed)  # (B, D)
    t = torch.linspace(0.0, task.horizon, task.n_eval_times, dtype=torch.float64)
    with torch.no_grad():
        if vector_field is None:
            target = energy(z0).expand(len(t), -1)  # (T, B)
            z_model = integrators.solve(sysm.vector_field, z0, t, method="rk4", max_dt=task.eval_dt)
        else:
            target = energy(sysm.reference_rollout(z0, t))
            z_model = integrators.solve(vector_field, z0, t, method="rk4", max_dt=task.eval_dt)
    err = (energy(z_model) - target).pow(2)
    return float(err.mean()) if torch.isfinite(err).all() else math.inf


def run_hnn(task: HNNTask, method: str, seed: int) -> dict:
    """Train ``method`` (``"baseline"`` or ``"hnn"``) on ``task`` with ``seed`` and measure
    it as Table 1 does. Returns ``train_loss``, ``test_loss`` (raw MSE on the noisy
    inputs' exact derivatives), ``energy_mse``, ``literal_energy_mse`` (where the paper's
    notebook measured another energy), ``truth_energy_mse`` (the integrator's floor) and
    ``train_seconds``."""
    arch = {"baseline": "mlp", "hnn": "hnn"}[method]
    x, y, x_test, y_test = hnn_split(task, seed)
    model = models.build(arch, state_dim=task.system.state_dim, width=task.width, depth=task.depth,
                         activation="tanh", generator=torch.Generator().manual_seed(seed))
    model.set_scales(x, y)
    seconds = fit(model, _random_subsets(x, y, task.batch_size, seed), model, steps=task.steps, lr=task.lr,
                  weight_decay=task.weight_decay, seed=seed)
    mse = lambda a, b: float((model(a) - b).pow(2).mean().detach())  # noqa: E731
    out = {"train_loss": mse(x, y), "test_loss": mse(x_test, y_test), "train_seconds": seconds}
    f64 = _float64_copy(model)
    field_model = lambda z, t: f64(z)  # noqa: E731
    out["energy_mse"] = hnn_energy_mse(task, field_model, seed)
    if task.literal_energy is not None:
        out["literal_energy_mse"] = hnn_energy_mse(task, field_model, seed, task.literal_energy)
    out["truth_energy_mse"] = hnn_energy_mse(task, None, seed)
    return out


# ---------------------------------------------------------------------------------------
# LNN double pendulum
# ---------------------------------------------------------------------------------------
class AccelerationMLP(nn.Module):
    """The LNN paper's baseline: an MLP predicts ``q̈`` from ``(q, q̇)``; ``q̇`` passes
    through exactly. ``s = [q, q̇] (B, 2·dof) -> [q̇, q̈] (B, 2·dof)``. Nothing is conserved.

    ``angles``: the network sees ``(cos q, sin q)`` instead of the (wrapped) angles, as the
    LNN does when it is given them, so the two differ only in the hard constraint.
    With scales set, ``q̈ = μ_a + σ_a ⊙ net(features)``.
    """

    coords = "velocity"

    def __init__(self, dof: int, width: int, depth: int, activation: str, angles: bool = False):
        super().__init__()
        self.dof, self.angles = dof, angles
        self.net = mlp.make_mlp((3 if angles else 2) * dof, dof, width, depth, activation)
        for name, size in (("x_mean", 2 * dof), ("x_std", 2 * dof), ("a_mean", dof), ("a_std", dof)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        mlp.check_pair(x, y, 2 * self.dof, 2 * self.dof)
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(mlp.spread(x))
        self.a_mean.copy_(y[:, self.dof:].mean(0))
        self.a_std.copy_(mlp.spread(y[:, self.dof:]))

    def forward(self, s: Tensor, t=None) -> Tensor:
        d = self.dof
        x = (s - self.x_mean) / self.x_std
        if self.angles:
            x = torch.cat([torch.cos(s[..., :d]), torch.sin(s[..., :d]), x[..., d:]], -1)
        return torch.cat([s[..., d:], self.a_mean + self.a_std * self.net(x)], -1)


def wrap_angles(s: Tensor, dof: int) -> Tensor:
    """Angles (the first ``dof`` columns) into ``[−π, π)``, the rest unchanged. The models
    see wrapped angles, as in the LNN paper: the physics is 2π-periodic, and a trajectory
    that goes over the top would otherwise leave the training range."""
    return torch.cat([torch.remainder(s[..., :dof] + math.pi, 2 * math.pi) - math.pi, s[..., dof:]], -1)


@dataclass(frozen=True)
class LNNTask:
    """The LNN paper's double-pendulum experiment.

    Training: fresh random states every step, ``θ ∈ U[−π, π)²`` and ``θ̇ ∈ U[−max_speed,
    max_speed]²`` (the paper: 300 epochs of 2 000 batches of 512 such states), targets the
    true ``θ̈``, loss ``loss`` on ``θ̈`` only, Adam with a cosine-annealed learning rate.
    Both models are the same MLP; the LNN differentiates it twice.

    Three choices of ours make the paper's generic LNN trainable in minutes (measured,
    see ``benchmarks/RESULTS.md``):

    * ``angle_features``: both networks see ``(cos θ, sin θ)``, not the wrapped angles the
      paper fed them. With wrapped angles ``L_θ`` has a seam at ``θ = ±π``: a path going
      over the top jumps in energy there, and the network must spend its capacity making
      the two sides agree. This one change took the LNN's median energy error on seed 0
      from 0.80 (with runaways) to 0.005 (none).
    * GELU instead of the paper's softplus.
    * A continuation in the Tikhonov regularisation of the velocity-Hessian solve, from
      ``tikhonov[0]`` down to ``tikhonov[1]`` geometrically over training, then the
      model's default (√ε, an exact solve) for every evaluation. Without it the LNN falls
      into ``θ̈ ≈ 0`` (the Hessian grows until every prediction vanishes) and stays there;
      with a weaker schedule (0.1 → 1e-4) it still did on seeds 1 and 2 at the default
      budget, with the default (1 → 1e-3) it learns on seeds 0, 1 and 2.

    The ``lnn_mechanical`` method, ``L = ½ θ̇ᵀM_θ(θ)θ̇ − V_θ(θ)`` with ``M_θ`` positive
    definite, is ours, not the paper's: the double pendulum's true Lagrangian has that
    form, its Hessian cannot be singular, and it learns on every seed we tried, so it
    needs no continuation (the schedule applies to ``lnn`` only).
    Evaluation: ``n_eval`` starts with ``θ ∈ U[0, 2π)²`` (``start_angle`` narrows it) and
    ``θ̇ ∈ U[0, 0.1)²``, rolled out
    to ``horizon`` with RK4 at ``eval_dt``; the score is the mean ``|E(model, horizon) −
    E(0)| / (3 m g l)``, the paper's "max potential energy" scale (29.4 for m = l = 1,
    g = 9.8), where ``E`` is the true energy.
    """

    system: DoublePendulum = field(default_factory=lambda: DoublePendulum(mass=1.0, length=1.0, gravity=9.8))
    steps: int = 6000
    batch_size: int = 256
    lr: float = 1e-3
    width: int = 128
    depth: int = 3
    activation: str = "gelu"
    loss: str = "l1"
    tikhonov: tuple[float, float] | None = (1.0, 1e-3)
    angle_features: bool = True
    max_speed: float = 10.0
    start_angle: float = math.pi
    validate_every: int = 250
    n_eval: int = 40
    horizon: float = 100.0
    eval_dt: float = 0.01
    n_scale_samples: int = 20_000

    @property
    def energy_scale(self) -> float:
        s = self.system
        return 3 * s.mass * s.gravity * s.length


def lnn_task(quick: bool = False, **overrides) -> LNNTask:
    """The paper's experiment at the size this engine trains on two CPU cores (see
    :class:`LNNTask`); ``quick`` trains a third as long; ``overrides`` replace any field."""
    task = LNNTask(steps=2000) if quick else LNNTask()
    return replace(task, **overrides)


def lnn_states(task: LNNTask, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` training states ``s = [θ, θ̇] (n, 4)`` and their true ``θ̈ (n, 2)``, float32."""
    theta = math.pi * (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1)
    omega = task.max_speed * (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1)
    return torch.cat([theta, omega], -1).float(), task.system.acceleration(theta, omega).float()


def lnn_starts(task: LNNTask, seed: int) -> Tensor:
    """The paper's test starts ``[θ, θ̇] (n_eval, 4)``: ``θ ∈ U[−a, a)²`` with ``a =
    start_angle`` (π: the paper's ``U[0, 2π)²``, the same angles modulo 2π), ``θ̇ ∈ U[0, 0.1)²``."""
    g = torch.Generator().manual_seed(seed)
    theta = task.start_angle * (2 * torch.rand(task.n_eval, 2, generator=g, dtype=torch.float64) - 1)
    omega = 0.1 * torch.rand(task.n_eval, 2, generator=g, dtype=torch.float64)
    return torch.cat([theta, omega], -1)


def velocity_energy(system: DoublePendulum, s: Tensor) -> Tensor:
    """The true energy at velocity-coordinate states ``s = [θ, θ̇] (..., 4) -> (...)``."""
    q = s[..., :2]
    return system.energy(torch.cat([q, system.momentum(q, s[..., 2:])], -1))


def run_lnn(task: LNNTask, method: str, seed: int) -> dict:
    """Train ``method`` (``"baseline"``: :class:`AccelerationMLP`; ``"lnn"``: the engine's
    :class:`~conserv_core.models.LagrangianNN`) and score it as the LNN paper does.

    Returns ``energy_error`` (the paper's score), ``energy_error_median``, ``blown_up``
    (rollouts that ran away: non-finite, or an energy error above ten times the scale),
    ``test_loss`` (the
    training loss on 4 096 fresh states), ``truth_energy_error`` (the same score for the
    true field under the same integrator: the floor) and the wall times. The weights
    kept are those with the lowest loss on 1 024 held-out states, checked every
    ``validate_every`` steps (the paper's notebooks keep their best too).
    """
    dof, sysm = 2, task.system
    if method in LNN_FORMS:
        model = models.build("lnn", dof=dof, width=task.width, depth=task.depth, activation=task.activation,
                             form=LNN_FORMS[method], angles=(0, 1) if task.angle_features else ())
    elif method == "baseline":
        model = AccelerationMLP(dof, task.width, task.depth, task.activation, angles=task.angle_features)
    else:
        raise ValueError(f"method must be one of {', '.join(LNN_METHODS)}; got {method!r}")
    models.init_weights(model, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    s_scale, a_scale = lnn_states(task, task.n_scale_samples, g)
    model.set_scales(s_scale, torch.cat([s_scale[:, dof:], a_scale], -1))

    def accel(s: Tensor) -> Tensor:
        return model(wrap_angles(s, dof))[..., dof:]

    def loss_on(s: Tensor, a: Tensor) -> float:
        with torch.no_grad():
            err = accel(s) - a
        return float(err.abs().mean() if task.loss == "l1" else err.pow(2).mean())

    # like the paper, keep the weights that did best on held-out states (judged with the
    # exact solve): the LNN's loss can jump up late in training
    s_val, a_val = lnn_states(task, 1024, torch.Generator().manual_seed(30_000 + seed))
    best = {"loss": math.inf, "state": None}

    def before_step(step: int) -> None:
        if step % task.validate_every == 0 and step > 0:
            keep, model.tikhonov = getattr(model, "tikhonov", None), None
            value = loss_on(s_val, a_val)
            model.tikhonov = keep
            if value < best["loss"]:
                best.update(loss=value, state=copy.deepcopy(model.state_dict()))
        if method == "lnn" and task.tikhonov is not None:
            first, last = task.tikhonov
            model.tikhonov = first * (last / first) ** (step / task.steps)

    seconds = fit(model, lambda step: lnn_states(task, task.batch_size, g), accel, steps=task.steps,
                  lr=task.lr, loss=task.loss, cosine=True, seed=seed, before_step=before_step)
    if method in LNN_FORMS:
        model.tikhonov = None  # evaluate the exact Euler–Lagrange dynamics
    if best["state"] is not None and best["loss"] < loss_on(s_val, a_val):
        model.load_state_dict(best["state"])
    s_test, a_test = lnn_states(task, 4096, torch.Generator().manual_seed(10_000 + seed))
    test_loss = loss_on(s_test, a_test)

    f64 = _float64_copy(model)
    s0 = lnn_starts(task, 20_000 + seed)
    t0 = time.perf_counter()
    score = _lnn_score(task, lambda s, t: f64(wrap_angles(s, dof)), s0)
    rollout_seconds = time.perf_counter() - t0

    def truth(s: Tensor, t) -> Tensor:
        return torch.cat([s[..., dof:], sysm.acceleration(s[..., :dof], s[..., dof:])], -1)

    floor = _lnn_score(task, truth, s0)
    return {"energy_error": score["mean"], "energy_error_median": score["median"], "blown_up": score["blown_up"],
            "test_loss": test_loss, "truth_energy_error": floor["mean"], "train_seconds": seconds,
            "rollout_seconds": rollout_seconds}


def _lnn_score(task: LNNTask, vector_field, s0: Tensor) -> dict:
    n_steps = int(round(task.horizon / task.eval_dt))
    with torch.no_grad():
        # saving every 1% lets a blown-up rollout stop early (the rest is NaN)
        _, s = integrators.rollout(vector_field, s0, task.eval_dt, n_steps, method="rk4", every=max(1, n_steps // 100))
    e0, e1 = velocity_energy(task.system, s[0]), velocity_energy(task.system, s[-1])
    err = ((e1 - e0).abs() / task.energy_scale).nan_to_num(nan=math.inf)  # (n_eval,)
    # an error of ten times the largest potential energy is a rollout that ran away
    return {"mean": float(err.mean()), "median": float(err.median()), "blown_up": int((~(err < 10)).sum())}


# ---------------------------------------------------------------------------------------
# what the reproduction scripts share
# ---------------------------------------------------------------------------------------
def reproduction_parser(description: str, seeds: str) -> argparse.ArgumentParser:
    """The options every ``benchmarks/reproduce_*.py`` script has: ``--seeds`` (default
    ``seeds``), ``--threads`` and ``--json``; each script adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", default=seeds, type=_seed_list, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these sizes)")
    p.add_argument("--json", metavar="PATH", help="write every run's numbers here")
    return p


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers ≥ 0; got {text!r}")
    return seeds


def choice_list(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse ``type``: a comma-separated list of names, each one of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or any(n not in allowed for n in names):
            raise argparse.ArgumentTypeError(f"must be comma-separated names from {', '.join(allowed)}; got {text!r}")
        return names

    return parse


def machine_banner(title: str, threads: int) -> str:
    """First line of a reproduction's output: what ran it, and how busy the machine was."""
    return (f"{title}: torch {torch.__version__}, {threads} thread(s), {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), load average at start {os.getloadavg()[0]:.1f}")


__all__ = [
    "HNN_REPORTED", "HNN_TASKS", "HNNTask", "LNNTask", "LNN_FORMS", "LNN_METHODS", "LNN_REPORTED",
    "AccelerationMLP", "PaperPendulum", "PaperTwoBody", "fit", "hnn_energy_mse", "hnn_split", "hnn_task",
    "choice_list", "lnn_starts", "lnn_states", "lnn_task", "machine_banner", "mean_spread", "paper_pendulum",
    "reproduction_parser", "run_hnn", "run_lnn", "velocity_energy", "wrap_angles",
]
