"""Exact conservation in discrete time: the discrete-gradient integrator and projection.

Everything here runs in float64 on *untrained* weights (a hard constraint must hold
whatever the weights are), drawn from seeded generators, never from torch's global RNG,
and where it makes sense on states 10x outside the range a model would be trained on.

* :func:`~conserv_core.integrators.discrete_gradient` keeps any ``H`` of a field
  ``ż = (J − R)∇H`` to its solve tolerance, step after step, and never lets it increase
  when ``R ⪰ 0``; it is second order.
* :class:`~conserv_core.integrators.Projection` keeps chosen invariants of *any* model at
  its tolerance, and fixes nothing else (the phase of a wrong model still drifts).
* Every true system's vector field is ``(J − R)∇H`` with its stated energy ``H``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conserv_core import integrators, models
from conserv_core.integrators import GradientForm, Projection
from conserv_core.systems import ALL_SYSTEMS, get_system

F64 = torch.float64
EPS = torch.finfo(F64).eps
#: the discrete gradient's default solve tolerance (100 ulps, relative to 1 + |z|)
DG_TOL = 100 * EPS
#: "over 10⁴ steps"
LONG = 10_000
#: the projection tolerance of the projection tests
PROJ_TOL = 1e-10

ODE_KEYS = sorted(k for k, cls in ALL_SYSTEMS.items() if cls.kind == "ode")


# -- helpers ---------------------------------------------------------------------------------
def untrained(arch: str, seed: int, state_dim: int = 2) -> torch.nn.Module:
    """A float64 model of ``arch`` with weights from ``Generator().manual_seed(seed)``."""
    model = models.build(arch, state_dim=state_dim, dof=state_dim // 2, width=64, depth=2, activation="tanh")
    model = model.double().eval()
    models.init_weights(model, torch.Generator().manual_seed(seed))
    return model


def gaussian(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def drift(fn, z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``|Q(z_t) − Q(z_0)| / scale`` of an invariant along ``z (T, B, D)``: ``(T, B)``; a
    non-finite state counts as infinite drift."""
    q = torch.stack([fn(zt) for zt in z])  # (T, B) or (T, B, k)
    change = (q - q[0]).abs() if q.dim() == 2 else (q - q[0]).norm(dim=-1)
    return (change / scale).nan_to_num(math.inf, math.inf, math.inf)


def fitted_order(dts, errors) -> float:
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


# -- 1. an untrained HNN: H_θ constant in discrete time ----------------------------------------
@pytest.mark.slow
def test_discrete_gradient_keeps_an_untrained_hnn_energy_where_rk4_drifts():
    """10⁴ steps of dt = 0.1 on an untrained HNN (three states where its network is
    unsaturated, one 10x out): ``H_θ`` stays within 1e-12 relative. RK4 on the same model,
    compared over the first 10³ steps, drifts more than 100x as much."""
    model = untrained("hnn", seed=1)
    z0 = torch.cat([gaussian(3, 2, seed=11), gaussian(1, 2, seed=12, scale=10.0)])
    dt, every = 0.1, 10
    with torch.no_grad():
        h0 = model.hamiltonian(z0)
        assert (h0.abs() > 0.05).all(), h0  # relative errors below are meaningful
        _, z = integrators.rollout(model.gradient_form, z0, dt, LONG, "discrete_gradient", every=every)
        dg = drift(model.hamiltonian, z, h0.abs())  # (T, B)
        _, z_rk = integrators.rollout(model, z0, dt, LONG // 10, "rk4", every=every)
        rk = drift(model.hamiltonian, z_rk, h0.abs())
    assert torch.isfinite(z).all()
    assert float((z - z0).norm(dim=-1).amax(0).min()) > 0.1  # every state moved
    assert float(dg.max()) <= 1e-12, float(dg.max())
    short = z_rk.shape[0]
    assert float(rk.max()) >= 100 * float(dg[:short].max()), (float(rk.max()), float(dg[:short].max()))


# -- 2. R ⪰ 0: energy never increases ----------------------------------------------------------
#: an energy "increase" below this, relative to the starting energy scale, is round-off
ROUND_OFF = 1e-13


def test_discrete_gradient_never_increases_the_damped_pendulum_energy():
    """The damped pendulum's truth (non-unit mass and length, so ``R = diag(0, b m l²)``
    matters), librating and 10x-energy rotating starts: ``H`` falls at every step (up to
    round-off) and by most of its value over the run."""
    sysm = get_system("pendulum", damping=0.5, mass=0.7, length=1.5)
    z0 = torch.cat([sysm.sample_initial(3, seed=2), sysm.sample_initial(2, seed=3, scale=10.0)])
    with torch.no_grad():
        _, z = integrators.rollout(sysm.gradient_form, z0, sysm.dt, 300, "discrete_gradient")
    h = sysm.energy(z)  # (T, B)
    assert torch.isfinite(h).all()
    rise = (h[1:] - h[:-1]) / h[0]
    assert float(rise.max()) <= ROUND_OFF, float(rise.max())
    assert (h[-1] < 0.2 * h[0]).all(), h[-1] / h[0]


@pytest.mark.slow
def test_discrete_gradient_never_increases_a_learned_energy_with_psd_dissipation():
    """An untrained HNN's ``H_θ`` with a constant ``R = L Lᵀ`` (``L`` fixed, random): the
    learned energy never rises, on states in range and 10x out (where the network
    saturates and H_θ is nearly flat), and falls overall."""
    model = untrained("hnn", seed=2)
    big_l = gaussian(2, 2, seed=21, scale=0.5)
    r = big_l @ big_l.T
    assert float(torch.linalg.eigvalsh(r).min()) > 0.0
    form = GradientForm(model.hamiltonian, dissipation=lambda z: r.expand(z.shape[0], 2, 2))
    z0 = torch.cat([gaussian(3, 2, seed=22), gaussian(2, 2, seed=23, scale=10.0)])
    with torch.no_grad():
        _, z = integrators.rollout(form, z0, 0.1, 300, "discrete_gradient")
        h = torch.stack([model.hamiltonian(zt) for zt in z])  # (T, B)
    assert torch.isfinite(h).all()
    scale = h[0].abs().max()  # an untrained H_θ may start near 0: one scale for the batch
    rise = (h[1:] - h[:-1]) / scale
    assert float(rise.max()) <= ROUND_OFF, float(rise.max())
    fall = (h[0] - h[-1]) / scale
    assert (fall > 0).all() and (fall[:3] > 1e-3).all(), fall  # 10x out H_θ is nearly flat


# -- 3. second order ---------------------------------------------------------------------------
SWEEP_T = 1.0
SWEEP_STEPS = (10, 20, 40, 80, 160)


def spring_case():
    # k ≠ 1/m: an isotropic H would hide a gradient taken at the step's end, not its midpoint
    sysm = get_system("spring", mass=0.7, k=2.0)
    z0 = torch.cat([sysm.sample_initial(3, seed=4), sysm.sample_initial(1, seed=5, scale=10.0)])
    end = sysm.exact_solution(z0, torch.tensor([SWEEP_T], dtype=F64))[-1]
    return sysm.gradient_form, z0, end


def damped_pendulum_case():
    """Against RK4 with a step 16x below the sweep's finest (error ~1e-13)."""
    sysm = get_system("pendulum", damping=0.5, mass=0.7, length=1.5)
    z0 = torch.cat([sysm.sample_initial(3, seed=6), sysm.sample_initial(1, seed=7, scale=10.0)])
    n = 16 * SWEEP_STEPS[-1]
    end = integrators.rollout(sysm.vector_field, z0, SWEEP_T / n, n, "rk4", every=n)[1][-1]
    return sysm.gradient_form, z0, end


@pytest.mark.parametrize("case", [spring_case, damped_pendulum_case], ids=["spring", "damped_pendulum"])
def test_discrete_gradient_is_second_order(case):
    form, z0, end = case()
    dts, errors = [], []
    with torch.no_grad():
        for n in SWEEP_STEPS:
            _, z = integrators.rollout(form, z0, SWEEP_T / n, n, "discrete_gradient", every=n)
            dts.append(SWEEP_T / n)
            errors.append(float((z[-1] - end).abs().max()))
    order = fitted_order(dts, errors)
    assert integrators.ORDER["discrete_gradient"] == 2
    assert abs(order - 2.0) <= 0.3, (order, errors)


# -- 4. the truth's energy at the solve tolerance ---------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("key, n_steps", [("pendulum", LONG), ("spring", 2000), ("nbody", 300)])
def test_discrete_gradient_keeps_the_true_energy_at_the_solve_tolerance(key, n_steps):
    """At the system's own step, from training starts and a 10x out-of-distribution one,
    each step changes the true energy (relative to the system's energy scale) by less
    than the solve tolerance in the integrator's own measure (relative to ``1 + |z|``),
    and ``n_steps`` of them change it by less than 1e-12 on every bounded orbit. (Fewer
    steps for the spring, whose quadratic H makes the scheme the implicit midpoint rule,
    and for n-body, whose steps cost several times more: the file stays near 90 s.)

    The pendulum's 10x start rotates over the top: its angle grows to ~10⁴ rad, where a
    float64 angle alone carries ``eps·|q| ≈ 2e-12`` of round-off into ``cos q`` at every
    step; that row is held to 1e-10 instead."""
    sysm = get_system(key)
    z0 = torch.cat([sysm.sample_initial(3, seed=8), sysm.sample_initial(1, seed=9, scale=10.0)])
    scale = sysm.invariant_scale("energy", z0)
    with torch.inference_mode():  # per-op dispatch dominates; no graph is needed
        _, z = integrators.rollout(sysm.gradient_form, z0, sysm.dt, n_steps, "discrete_gradient")
    h = sysm.energy(z)  # (T, B)
    assert torch.isfinite(h).all()
    size = 1.0 + z.abs().amax(-1)  # (T, B): what the solve tolerance is relative to
    per_step = (h[1:] - h[:-1]).abs() / scale / size[1:]
    assert float(per_step.max()) <= DG_TOL, float(per_step.max())
    total = ((h - h[0]).abs() / scale).amax(0)  # (B,)
    bounded = z.abs().amax((0, 2)) < 100.0
    assert int(bounded.sum()) >= 3
    assert float(total[bounded].max()) <= 1e-12, total
    assert float(total.max()) <= 1e-10, total


# -- 5. every true field is (J − R)∇H with its stated H --------------------------------------
CASES = [(k, {}) for k in ODE_KEYS] + [("pendulum", {"damping": 0.5, "mass": 0.7, "length": 1.5}),
                                       ("nbody", {"n_bodies": 3, "trap": 0.7})]


def states(sysm, seed: int) -> torch.Tensor:
    """Training starts, the same 10x out, and Gaussian states at 10x their spread."""
    z = sysm.sample_initial(6, seed=seed)
    spread = z.std(0).clamp_min(0.1)
    return torch.cat([z, 10.0 * z, spread * gaussian(6, sysm.state_dim, seed=seed + 1, scale=10.0)])


@pytest.mark.parametrize("key, params", CASES, ids=[k + ("_" + "_".join(p)[:12] if p else "") for k, p in CASES])
def test_every_true_field_is_its_gradient_form(key, params):
    sysm = get_system(key, **params)
    z = states(sysm, seed=31)
    x = z.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(sysm.energy(x).sum(), x)
    grad = sysm.energy_gradient(z)
    tiny = 1e-12 * float(auto.abs().max())
    torch.testing.assert_close(grad, auto, rtol=1e-10, atol=tiny)
    f = sysm.vector_field(z)
    form = sysm.gradient_form
    torch.testing.assert_close(form(z), f, rtol=1e-12, atol=1e-12 * float(f.abs().max()))
    torch.testing.assert_close(form(z, 0.3), f, rtol=1e-12, atol=1e-12 * float(f.abs().max()))
    # dH/dt = ∇H · f = −∇Hᵀ R ∇H: zero without dissipation, negative with it
    dhdt = (auto * f).sum(-1)
    size = auto.norm(dim=-1) * f.norm(dim=-1)
    r = sysm.dissipation(z)
    if r is None:
        assert form.dissipation is None
        assert float((dhdt.abs() / size.clamp_min(1e-300)).max()) < 1e-12
    else:
        torch.testing.assert_close(r, r.transpose(1, 2))
        assert float(torch.linalg.eigvalsh(r).min()) >= 0.0
        expected = -(auto.unsqueeze(1) @ r @ auto.unsqueeze(-1)).reshape(-1)
        torch.testing.assert_close(dhdt, expected, rtol=1e-10, atol=1e-12 * float(size.max()))
        assert (dhdt <= 1e-12 * size).all()


# -- 5b. the discrete gradient's Newton solve: declarations and agreement --------------------
#: systems that declare a separable energy (quadratic kinetic, closed-form ∇²V)
SEPARABLE = [("pendulum", {}), ("pendulum", {"damping": 0.5, "mass": 0.7, "length": 1.5}),
             ("nbody", {"n_bodies": 5}), ("nbody", {"n_bodies": 5, "trap": 0.7}),
             ("nbody", {"n_bodies": 64}), ("nbody", {"n_bodies": 64, "trap": 0.7})]
SEPARABLE_IDS = [k + "".join(f"_{n}{v}" for n, v in p.items()) for k, p in SEPARABLE]


@pytest.mark.slow
@pytest.mark.parametrize("key, params", SEPARABLE, ids=SEPARABLE_IDS)
def test_separable_energy_declarations_equal_autograd(key, params):
    """What the Newton solve takes on trust, against the system's own energy: ``H = T(p) +
    V(q)`` with ``T = ½ Σ p²/m`` (autograd's Hessian of ``H``: ``diag(M⁻¹)`` on the
    momenta, nothing across), ``V``, ``∇V``, ``∇²V`` (with and without the Hessian
    asked for), and ``R`` zero outside its constant momentum block, on training states,
    10x out and Gaussian states at 10x their spread (planted: the sign of n-body's
    ``3 d dᵀ / s^{5/2}`` flipped in the xy blocks, and the damped pendulum's ``R_pp``
    without its ``m l²``, each fail it)."""
    sysm = get_system(key, **params)
    sep = sysm.separable_energy()
    assert sep is not None and sysm.gradient_form.separable is not None
    z = states(sysm, seed=41)
    d = sysm.dof
    q, p = z[:, :d], z[:, d:]
    minv = torch.tensor(sep.inverse_mass, dtype=F64)
    value, grad, hess = sep.potential(q)
    value2, grad2, none = sep.potential(q, hessian=False)
    assert none is None
    torch.testing.assert_close(value2, value, rtol=0, atol=0)
    torch.testing.assert_close(grad2, grad, rtol=0, atol=0)
    h = sysm.energy(z)
    torch.testing.assert_close(value + 0.5 * (minv * p * p).sum(-1), h, rtol=1e-12, atol=1e-12 * float(h.abs().max()))
    auto = torch.func.vmap(torch.func.hessian(lambda x: sysm.energy(x.unsqueeze(0))[0]))(z)  # (B, D, D)
    x = z.clone().requires_grad_(True)
    (auto_grad,) = torch.autograd.grad(sysm.energy(x).sum(), x)
    torch.testing.assert_close(grad, auto_grad[:, :d], rtol=1e-10, atol=1e-12 * float(auto_grad.abs().max()))
    scale = float(auto.abs().max())
    torch.testing.assert_close(hess, auto[:, :d, :d], rtol=1e-10, atol=1e-12 * scale)
    torch.testing.assert_close(auto[:, d:, d:], torch.diag(minv).expand(z.shape[0], d, d), rtol=1e-12, atol=0)
    assert float(auto[:, :d, d:].abs().max()) == 0.0
    r = sysm.dissipation(z)
    if sep.momentum_dissipation is None:
        assert r is None
    else:
        full = torch.zeros(z.shape[0], 2 * d, 2 * d, dtype=F64)
        full[:, d:, d:] = torch.tensor(sep.momentum_dissipation, dtype=F64)
        torch.testing.assert_close(r, full, rtol=1e-14, atol=0)


NEWTON_CASES = [("pendulum", {}), ("pendulum", {"damping": 0.5, "mass": 0.7, "length": 1.5}),
                ("nbody", {"n_bodies": 8}), ("nbody", {"n_bodies": 3, "trap": 0.7})]
NEWTON_IDS = [k + "".join(f"_{n}{v}" for n, v in p.items()) for k, p in NEWTON_CASES]


@pytest.mark.parametrize("key, params", NEWTON_CASES, ids=NEWTON_IDS)
def test_newton_and_fixed_point_solves_give_the_same_steps(key, params):
    """The Newton solve and the general (Anderson fixed-point) one solve the same
    equations: from training starts and the same 10x out (rotating over the top, bodies
    far apart and fast), 40 steps of each at the system's dt agree step by step to the
    solve tolerance, in float64, and Newton takes at most 4 evaluations a step, the
    fixed-point solve more (planted: the rank-one ``δ wᵀ`` term of the Newton
    derivative dropped makes it linear, 5-7 evaluations, and fails it)."""
    sysm = get_system(key, **params)
    z = torch.cat([sysm.sample_initial(6, seed=51), sysm.sample_initial(6, seed=52, scale=10.0)])
    newton = integrators.discrete_gradient(sysm.gradient_form, sysm.dt, solver="newton")
    fixed = integrators.discrete_gradient(sysm.gradient_form, sysm.dt, solver="fixed_point")
    auto = integrators.discrete_gradient(sysm, sysm.dt)
    its_newton, its_fixed = [], []
    with torch.no_grad():
        for _ in range(40):
            a, b = newton(z, 0.0), fixed(z, 0.0)
            its_newton.append(newton.iterations)
            its_fixed.append(fixed.iterations)
            torch.testing.assert_close(auto(z, 0.0), a, rtol=0, atol=0)  # auto picks Newton here
            gap = float(((a - b).abs() / (1.0 + b.abs())).max())
            assert gap <= 10 * DG_TOL, gap
            z = b
    assert max(its_newton) <= 4, its_newton
    assert sum(its_newton) < sum(its_fixed), (its_newton, its_fixed)


def test_newton_solve_needs_a_declaration_and_the_learned_path_keeps_the_fixed_point_solve():
    """A learned energy, the double pendulum and the spring declare no separable energy:
    ``solver='newton'`` is refused with a message naming what it needs, and ``'auto'``
    (the default) runs the fixed-point solve, as before."""
    model = untrained("hnn", seed=0)
    assert model.gradient_form.separable is None
    for field in (model, get_system("double_pendulum"), get_system("spring")):
        assert integrators.gradient_form_of(field).separable is None
        with pytest.raises(ValueError, match="separable-energy declaration"):
            integrators.discrete_gradient(field, 0.1, solver="newton")
    with pytest.raises(ValueError, match="solver must be one of"):
        integrators.discrete_gradient(get_system("pendulum"), 0.1, solver="lu")
    z = gaussian(4, 2, seed=3)
    with torch.no_grad():
        a = integrators.discrete_gradient(model, 0.1)(z, 0.0)
        b = integrators.discrete_gradient(model, 0.1, solver="fixed_point")(z, 0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- 6. projection: any model's invariants at the tolerance ----------------------------------
def projected_and_free(model, sysm, names, z0, n_steps, every, closed_form=False):
    """RK4 rollouts of ``model`` with and without projection onto ``names``: drift of each
    invariant ``(T, B)`` relative to the system's scale, with and without. The free one
    runs the first tenth of the steps only: its drift up to there is a lower bound.
    ``closed_form``: the Newton iterates use the system's closed-form gradients (as the
    trainer does for canonical models), else autograd."""
    inv = sysm.invariants()
    scales = {n: sysm.invariant_scale(n, z0) for n in names}
    evaluate = sysm.invariants_and_gradients(names) if closed_form else None
    proj = Projection({n: inv[n] for n in names}, tol=PROJ_TOL, evaluate=evaluate)
    with torch.inference_mode():  # the projection differentiates the invariants itself
        _, z = integrators.rollout(model, z0, sysm.dt, n_steps, "rk4", every=every,
                                   project=proj, project_scales=scales)
        _, z_free = integrators.rollout(model, z0, sysm.dt, n_steps // 10, "rk4", every=every)
    assert torch.isfinite(z).all()
    assert float((z[-1] - z0).norm(dim=-1).min()) > 0.1  # the model moved every state
    return ({n: drift(inv[n], z, scales[n]) for n in names},
            {n: drift(inv[n], z_free, scales[n]) for n in names})


@pytest.mark.slow
@pytest.mark.parametrize("closed_form", [True, False], ids=["closed_form", "autograd"])
def test_projection_keeps_an_untrained_mlp_on_the_pendulum_energy(closed_form):
    """10⁴ RK4 steps of an untrained MLP from librating starts and 10x-energy rotating
    ones: projected, the energy is within the tolerance at every saved step; free, the
    same rollout is off by more than 1e-4 within its first 10³ steps."""
    sysm = get_system("pendulum")
    z0 = torch.cat([sysm.sample_initial(3, seed=4), sysm.sample_initial(2, seed=5, scale=10.0)])
    held, free = projected_and_free(untrained("mlp", seed=0), sysm, ["energy"], z0, LONG, every=10,
                                    closed_form=closed_form)
    assert float(held["energy"].max()) <= PROJ_TOL, float(held["energy"].max())
    assert float(free["energy"].max()) >= 1e6 * PROJ_TOL, float(free["energy"].max())


@pytest.mark.slow
@pytest.mark.parametrize("closed_form", [True, False], ids=["closed_form", "autograd"])
def test_projection_keeps_energy_and_both_momenta_of_an_untrained_mlp_on_nbody(closed_form):
    """The default n-body (2 bodies, state 8), 500 steps at its dt, projected onto energy,
    linear and angular momentum together, tolerances relative to the system's own scales
    (``P(0) = 0``): all within the tolerance; free, each is off by far more."""
    sysm = get_system("nbody")
    z0 = torch.cat([sysm.sample_initial(3, seed=4), sysm.sample_initial(1, seed=5, scale=10.0)])
    model = untrained("mlp", seed=0, state_dim=sysm.state_dim)
    names = ["energy", "momentum", "angular_momentum"]
    assert set(names) == set(sysm.invariant_names())
    held, free = projected_and_free(model, sysm, names, z0, 500, every=10, closed_form=closed_form)
    for name in names:
        assert float(held[name].max()) <= PROJ_TOL, (name, float(held[name].max()))
        assert float(free[name].max()) >= 1e6 * PROJ_TOL, (name, float(free[name].max()))


# -- 7. what projection does not fix ----------------------------------------------------------
@pytest.mark.slow
def test_projection_fixes_the_energy_not_the_phase_of_a_wrong_model():
    """The true field with gravity 5% too strong, projected onto the true energy: the
    energy stays at the tolerance, yet after ~25 periods the state is as far from the
    truth as the orbit is wide: the swing runs 2.5% fast."""
    truth = get_system("pendulum")
    wrong = get_system("pendulum", gravity=1.05 * truth.gravity)
    z0 = truth.sample_initial(4, seed=6)
    scales = {"energy": truth.invariant_scale("energy", z0)}
    proj = Projection({"energy": truth.energy}, tol=PROJ_TOL)
    with torch.inference_mode():
        _, z = integrators.rollout(wrong.vector_field, z0, truth.dt, 500, "rk4", every=5,
                                   project=proj, project_scales=scales)
        _, z_true = integrators.rollout(truth.gradient_form, z0, truth.dt, 500, "discrete_gradient", every=5)
    assert float(drift(truth.energy, z, scales["energy"]).max()) <= PROJ_TOL
    width = z_true.norm(dim=-1).amax(0)  # (B,)
    error = (z - z_true).norm(dim=-1).amax(0)  # (B,)
    assert (error > 0.5 * width).all(), (error, width)


# -- 8. refusals --------------------------------------------------------------------------------
def test_discrete_gradient_refuses_a_field_without_an_energy():
    for field in (lambda z, t: z, untrained("mlp", seed=0)):
        with pytest.raises(ValueError, match="scalar energy") as err:
            integrators.discrete_gradient(field, 0.1)
        assert "hnn" in str(err.value)
    with pytest.raises(ValueError, match="scalar energy"):
        integrators.rollout(untrained("mlp", seed=0), gaussian(2, 2, seed=0), 0.1, 3, "discrete_gradient")
    # what it accepts: a GradientForm, a model or system that has one
    for ok in (untrained("hnn", seed=0), get_system("pendulum"), get_system("pendulum").gradient_form):
        integrators.discrete_gradient(ok, 0.1)


@pytest.mark.parametrize("tol", [0.0, -1e-10, math.nan, math.inf, "1e-10"])
def test_projection_refuses_a_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tolerance"):
        Projection({"energy": get_system("pendulum").energy}, tol=tol)


def test_projection_refuses_no_invariants():
    with pytest.raises(ValueError, match="at least one invariant"):
        Projection({}, tol=1e-10)


@pytest.mark.parametrize("key, params", [(k, {}) for k, c in ALL_SYSTEMS.items() if c.kind == "ode"]
                         + [("pendulum", {"damping": 0.4}), ("nbody", {"n_bodies": 5}), ("nbody", {"n_bodies": 64}),
                            ("nbody", {"n_bodies": 3, "trap": 0.7})])
def test_closed_form_invariant_gradients_equal_autograd(key, params):
    """What projection uses for canonical models instead of autograd (planted: a sign
    flipped in n-body's ∂L/∂p fails it)."""
    sysm = get_system(key, **params)
    z = torch.cat([sysm.sample_initial(4, seed=2), 10.0 * sysm.sample_initial(4, seed=3)])
    for name, grad in sysm.invariant_gradients().items():
        x = z.clone().requires_grad_(True)
        q = sysm.invariants()[name](x).reshape(z.shape[0], -1)
        auto = torch.stack([torch.autograd.grad(q[:, k].sum(), x, retain_graph=True)[0]
                            for k in range(q.shape[1])], 1)
        torch.testing.assert_close(grad(z), auto, rtol=1e-12, atol=1e-12 * float(auto.abs().max()))


@pytest.mark.parametrize("key, params", [(k, {}) for k, c in ALL_SYSTEMS.items() if c.kind == "ode"]
                         + [("pendulum", {"damping": 0.4}), ("nbody", {"n_bodies": 5}), ("nbody", {"n_bodies": 64}),
                            ("nbody", {"n_bodies": 3, "trap": 0.7})])
def test_invariants_and_gradients_together_equal_each_one_and_autograd(key, params):
    """What a projected step's Newton iterate evaluates (n-body's shares the pair sums and
    turns the state for ∂L): the values of :meth:`invariants` and their autograd Jacobian,
    in the order asked, for every subset, 10x out of range (planted: n-body's quarter
    turn with both signs +, and its ∇E with the force's sign kept, each fail it)."""
    sysm = get_system(key, **params)
    z = torch.cat([sysm.sample_initial(4, seed=2), 10.0 * sysm.sample_initial(4, seed=3)])
    names = list(sysm.invariant_gradients())
    subsets = [names, names[::-1]] + [[n] for n in names]
    for subset in subsets:
        q, g = sysm.invariants_and_gradients(subset)(z)
        x = z.clone().requires_grad_(True)
        ref = torch.cat([sysm.invariants()[n](x).reshape(z.shape[0], -1) for n in subset], -1)
        auto = torch.stack([torch.autograd.grad(ref[:, k].sum(), x, retain_graph=True)[0]
                            for k in range(ref.shape[1])], 1)
        torch.testing.assert_close(q, ref.detach(), rtol=1e-12, atol=1e-12 * float(ref.detach().abs().max()))
        torch.testing.assert_close(g, auto, rtol=1e-12, atol=1e-12 * float(auto.abs().max()))


def test_invariants_and_gradients_refuses_an_invariant_without_a_closed_form():
    with pytest.raises(ValueError, match="no closed-form gradient of momentum"):
        get_system("pendulum").invariants_and_gradients(["momentum"])
