"""The batched integrators: fitted orders, long-time energy behaviour, the error paths.

Every test that names an integrator is parametrized over ``integrators.INTEGRATORS``, so a
new one is checked as soon as it is registered (with its ``ORDER`` and ``SYMPLECTIC``).
An integrator in ``integrators.NEEDS_ENERGY`` (the discrete gradient) is handed the same
field written as a :class:`~conserv_core.integrators.GradientForm` (:func:`field_for`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conserv_core import integrators, systems

NAMES = list(integrators.INTEGRATORS)

#: a fitted order may differ from the declared one by this much
ORDER_TOL = 0.2
#: horizon and step counts of the convergence sweep (dt = 0.1 ... 0.00625)
SWEEP_T = 1.0
SWEEP_STEPS = (10, 20, 40, 80, 160)
#: round-off level of a conserved quadratic invariant after 1000 float64 steps
ROUND_OFF = 1e-12


def oscillator(z: torch.Tensor, t: float) -> torch.Tensor:
    """Unit harmonic oscillator(s) ``q'' = -q``: ``z = [q, p]``, ``(B, 2d) -> (B, 2d)``."""
    d = z.shape[-1] // 2
    return torch.cat([z[..., d:], -z[..., :d]], -1)


def oscillator_exact(z0: torch.Tensor, t: float) -> torch.Tensor:
    d = z0.shape[-1] // 2
    q0, p0 = z0[..., :d], z0[..., d:]
    c, s = math.cos(t), math.sin(t)
    return torch.cat([c * q0 + s * p0, -s * q0 + c * p0], -1)


def forced(z: torch.Tensor, t: float) -> torch.Tensor:
    """``q'' = -q + cos 2t``: time-dependent, so a step that passes the wrong stage time
    loses its order. Separable (``dq/dt`` depends on ``p`` only)."""
    q, p = z[..., :1], z[..., 1:]
    return torch.cat([p, -q + math.cos(2.0 * t)], -1)


def forced_exact(z0: torch.Tensor, t: float) -> torch.Tensor:
    # q = A cos t + B sin t - cos(2t)/3 with A = q0 + 1/3, B = p0
    a, b = z0[..., :1] + 1.0 / 3.0, z0[..., 1:]
    q = a * math.cos(t) + b * math.sin(t) - math.cos(2 * t) / 3
    p = -a * math.sin(t) + b * math.cos(t) + 2 * math.sin(2 * t) / 3
    return torch.cat([q, p], -1)


#: the oscillator as ``ż = J∇H`` with ``H = ½|z|²``; the forced one has no autonomous
#: energy, so an integrator that needs one is not run on it
OSCILLATOR_FORM = integrators.GradientForm(lambda z: 0.5 * (z * z).sum(-1), gradient=lambda z: z)

PENDULUM = systems.Pendulum(length=1.5, gravity=9.81, mass=0.7)


def pendulum_reference(z0: torch.Tensor, t: float) -> torch.Tensor:
    """RK4 with a step 16x below the sweep's finest: error ~1e-14, far below the sweep's."""
    n = 16 * SWEEP_STEPS[-1]
    return integrators.rollout(PENDULUM.vector_field, z0, t / n, n, "rk4", every=n)[1][-1]


Z0 = torch.tensor([[1.0, 0.0], [0.3, -0.8], [-1.2, 0.5]], dtype=torch.float64)
PROBLEMS = {
    "oscillator": (oscillator, oscillator_exact, Z0),
    "forced": (forced, forced_exact, Z0),
    "pendulum": (PENDULUM.vector_field, pendulum_reference, PENDULUM.sample_initial(3, seed=5)),
}
#: each problem's field as a GradientForm (None: it has none)
FORMS = {"oscillator": OSCILLATOR_FORM, "forced": None, "pendulum": PENDULUM.gradient_form}


def field_for(name: str, f, form):
    """What integrator ``name`` is handed: ``form`` (the same field as a GradientForm) if it
    needs a scalar energy, else the plain field ``f``. Checks the two agree."""
    if name not in integrators.NEEDS_ENERGY:
        return f
    z = torch.tensor([[0.7, -0.4], [-1.3, 0.9]], dtype=torch.float64)
    assert torch.allclose(form(z, 0.0), f(z, 0.0), rtol=1e-14, atol=1e-14), "the form is not the same field"
    return form


def fitted_order(dts, errors) -> float:
    """Least-squares slope of log(error) against log(dt)."""
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def test_every_integrator_declares_order_and_symplecticity():
    assert set(integrators.ORDER) == set(NAMES)
    assert set(integrators.SYMPLECTIC) == set(NAMES)


@pytest.fixture(scope="module")
def exact_end():
    return {key: exact(z0, SWEEP_T) for key, (_, exact, z0) in PROBLEMS.items()}


#: (problem, integrator) pairs that apply: the forced problem has no autonomous energy, so
#: the integrators that need one (the discrete gradient) are not paired with it
PAIRS = [(p, n) for p in PROBLEMS for n in NAMES if FORMS[p] is not None or n not in integrators.NEEDS_ENERGY]


@pytest.mark.parametrize("problem, name", PAIRS)
def test_fitted_convergence_order(name, problem, exact_end):
    f, _, z0 = PROBLEMS[problem]
    f = field_for(name, f, FORMS[problem])
    dts, errors = [], []
    for n in SWEEP_STEPS:
        _, z = integrators.rollout(f, z0, SWEEP_T / n, n, name, every=n)
        dts.append(SWEEP_T / n)
        errors.append(float((z[-1] - exact_end[problem]).abs().max()))
    order = fitted_order(dts, errors)
    assert abs(order - integrators.ORDER[name]) < ORDER_TOL, (name, problem, order, errors)


# -- long-time energy on the pendulum ------------------------------------------------------
#: moderate step (about 20 steps per small-amplitude period), about 200 periods. The
#: last-tenth / first-tenth ratio separates a linear drift (ratio ~10) from a bounded error
#: (ratio ~1) at any length; 10⁵ steps would cost ~100 s for implicit midpoint alone
#: (~19 fixed-point iterations a step, each dominated by torch's per-op overhead).
LONG_DT = 0.1
LONG_STEPS = 4_000
LONG_PENDULUM = systems.Pendulum()


#: relative energy error of the discrete gradient (energy-conserving by construction)
#: over that run: its solve tolerance plus accumulated round-off
DG_ENERGY_TOL = 1e-11


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_long_time_energy_error_bounded_only_for_symplectic(name):
    """Max relative energy error in the last tenth of the run against the first tenth:
    the same for a symplectic method (bounded oscillation), larger for the others. An
    energy-conserving integrator (the discrete gradient) keeps it at round-off throughout:
    neither growing nor oscillating at O(dt²)."""
    z0 = LONG_PENDULUM.sample_initial(6, seed=1)
    e0 = LONG_PENDULUM.energy(z0)
    f = field_for(name, LONG_PENDULUM.vector_field, LONG_PENDULUM.gradient_form)
    with torch.inference_mode():  # dispatch overhead dominates; no graph is needed here
        _, z = integrators.rollout(f, z0, LONG_DT, LONG_STEPS, name, every=10)
    err = (LONG_PENDULUM.energy(z) - e0).abs() / e0  # (T, B)
    assert torch.isfinite(err).all()
    tenth = err.shape[0] // 10
    first, last = err[1 : tenth + 1].amax(0), err[-tenth:].amax(0)  # (B,)
    if name in integrators.NEEDS_ENERGY:
        assert err.max() < DG_ENERGY_TOL, (name, float(err.max()))
    elif integrators.SYMPLECTIC[name]:
        assert (last <= 1.05 * first).all(), (name, first, last)
        assert last.max() < 0.05, (name, last)
    else:
        assert (last >= 1.3 * first).all(), (name, first, last)


# -- exact conservation of quadratic invariants -------------------------------------------
def test_implicit_midpoint_conserves_quadratic_invariants_to_round_off():
    """Energy ½|z|² and angular momentum q_x p_y − q_y p_x of an isotropic 2D oscillator
    are quadratic: implicit midpoint keeps both to round-off, leapfrog only to O(dt²)."""
    z0 = torch.tensor([[1.0, 0.2, -0.3, 0.9], [0.1, -0.7, 1.1, 0.4]], dtype=torch.float64)

    def invariants(z):
        energy = 0.5 * (z**2).sum(-1)
        ang = z[..., 0] * z[..., 3] - z[..., 1] * z[..., 2]
        return energy, ang

    def drift(method):
        _, z = integrators.rollout(oscillator, z0, 0.1, 1000, method, every=10)
        return [float(((q - q[0]).abs() / q[0].abs()).max()) for q in invariants(z)]

    assert max(drift("implicit_midpoint")) < ROUND_OFF
    assert drift("leapfrog")[0] > 1e-4  # the check can tell conservation from its absence


# -- error paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_implicit_midpoint_refuses_too_large_a_step(dtype):
    """Fixed-point iteration diverges when dt·Lip(f)/2 > 1: it must raise, in float32 too
    (where the diverging iterates overflow), instead of returning an unconverged state."""
    z0 = torch.tensor([[1.0, 0.0]], dtype=dtype)
    with pytest.raises(RuntimeError, match="reduce dt"):
        integrators.implicit_midpoint(oscillator, 5.0)(z0, 0.0)
    with pytest.raises(RuntimeError, match="did not converge"):
        integrators.rollout(oscillator, z0, 5.0, 3, "implicit_midpoint")


def test_implicit_midpoint_passes_a_blown_up_field_on():
    z0 = torch.ones(2, 2, dtype=torch.float64)
    z = integrators.implicit_midpoint(lambda z, t: z * math.inf, 0.1)(z0, 0.0)
    assert not torch.isfinite(z).all()


@pytest.mark.parametrize("name", NAMES)
def test_rollout_fills_nan_after_blow_up_and_stops(name):
    """A field that grows the state as e^t and is infinite beyond |z| = 10 (a model blowing
    up): the rollout keeps the finite states, fills the rest with NaN and stops calling
    the field."""
    times = []

    def f(z, t):
        times.append(t)
        return torch.where(z.abs() < 10.0, z, math.inf)

    z0 = torch.tensor([[1.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    n_steps, dt = 2000, 0.05
    field, tick = f, None
    if name in integrators.NEEDS_ENERGY:
        # the same field as (J − R)∇H with H = ½|z|² and R = J − I (anti-dissipative, not
        # PSD: H grows), so (J − R)∇H = ∇H = z. A GradientForm sees no time: its gradient
        # records the time of the rollout step it is called in, counted by the rollout's
        # once-a-step stop check.
        steps = []

        def tick():
            steps.append(1)
            return False

        r = torch.tensor([[-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
        field = integrators.GradientForm(
            lambda z: torch.where((z.abs() < 10.0).all(-1), 0.5 * (z * z).sum(-1), math.inf),
            dissipation=lambda z: r.expand(z.shape[0], 2, 2),
            gradient=lambda z: f(z, (len(steps) - 1) * dt),
        )
    t, z = integrators.rollout(field, z0, dt, n_steps, name, every=2, should_stop=tick)
    assert z.shape == (n_steps // 2 + 1, 2, 2) and t.shape == (n_steps // 2 + 1,)
    bad = (~torch.isfinite(z)).flatten(1).any(-1)  # (T,)
    first_bad = int(bad.nonzero()[0])
    assert 10 < first_bad < 40  # log(10) / (2 dt) = 23 saved states
    assert torch.isfinite(z[:first_bad]).all()
    assert torch.isnan(z[first_bad + 1 :]).all()
    assert max(times) <= float(t[first_bad]) + 1e-9  # it stopped at the blow-up


def test_rollout_can_keep_stepping_through_non_finite_states():
    calls = []

    def f(z, t):
        calls.append(t)
        return z * math.inf

    integrators.rollout(f, torch.ones(1, 2), 0.1, 20, "euler", stop_on_nonfinite=False)
    assert len(calls) == 20


def test_rollout_times_and_start_time():
    """``t`` holds the saved times, and the field sees absolute times ``t0 + i dt``."""
    def clock(z, t):  # dz/dt = t, which RK4 integrates exactly (Simpson's rule)
        return torch.full_like(z, t)

    z0 = torch.zeros(1, 2, dtype=torch.float64)
    t, z = integrators.rollout(clock, z0, 0.25, 8, "rk4", t0=1.0, every=2)
    assert torch.allclose(t, torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0], dtype=torch.float64))
    expected = 0.5 * (t**2 - 1.0)  # ∫_1^t s ds
    assert torch.allclose(z[:, 0, 0], expected, atol=1e-13)
    assert torch.equal(z[0], z0)


def test_rollout_validates_its_counts():
    with pytest.raises(ValueError, match="n_steps"):
        integrators.rollout(oscillator, Z0, 0.1, -1)
    with pytest.raises(ValueError, match="every"):
        integrators.rollout(oscillator, Z0, 0.1, 10, every=0)


# -- solve ---------------------------------------------------------------------------------
def test_solve_lands_on_requested_times():
    """Irregular times: each interval is split into equal steps <= max_dt, so the state at
    every requested time is the exact solution there (to RK4's error)."""
    t = torch.tensor([0.0, 0.013, 0.5, 0.5, 1.37, 2.0], dtype=torch.float64)
    steps = []

    def f(z, s):
        steps.append(s)
        return oscillator(z, s)

    z = integrators.solve(f, Z0, t, method="rk4", max_dt=0.01)
    assert z.shape == (len(t),) + Z0.shape
    for k, tk in enumerate(t.tolist()):
        assert torch.allclose(z[k], oscillator_exact(Z0, tk), atol=1e-9), tk
    # the field is called at stage times between the requested ones, never beyond the last
    assert max(steps) <= 2.0 + 1e-12 and min(steps) >= 0.0
    # ceil(Δt / max_dt) steps per interval, 4 stages each
    n_steps = sum(max(1, math.ceil(round(float(b - a) / 0.01, 9))) for a, b in zip(t[:-1], t[1:]))
    assert len(steps) == 4 * n_steps


def test_solve_passes_absolute_times():
    """``dz/dt = t²`` from 0.3: the stage times must be absolute (RK4 is exact here)."""
    t = torch.tensor([0.3, 0.7, 1.9], dtype=torch.float64)
    z0 = torch.zeros(1, 2, dtype=torch.float64)
    z = integrators.solve(lambda z, s: torch.full_like(z, s * s), z0, t, max_dt=0.05)
    assert torch.allclose(z[:, 0, 0], (t**3 - 0.3**3) / 3, atol=1e-13)


# -- dtypes and names ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_float32_rollout(name):
    z64 = PENDULUM.sample_initial(4, seed=2)
    f = field_for(name, PENDULUM.vector_field, PENDULUM.gradient_form)
    _, out64 = integrators.rollout(f, z64, 0.01, 100, name, every=10)
    t32, out32 = integrators.rollout(f, z64.float(), 0.01, 100, name, every=10)
    assert out32.dtype == torch.float32 and t32.dtype == torch.float32
    assert torch.isfinite(out32).all()
    assert torch.allclose(out32.double(), out64, atol=1e-4), (out32.double() - out64).abs().max()


def test_unknown_integrator_is_refused_with_the_valid_names():
    for bad in ("rk5", "Leapfrog", ""):
        with pytest.raises(ValueError) as err:
            integrators.get(bad)
        for name in NAMES:
            assert name in str(err.value)
    with pytest.raises(ValueError, match="integrator must be one of"):
        integrators.rollout(oscillator, Z0, 0.1, 1, method="verlet")
    with pytest.raises(ValueError, match="integrator must be one of"):
        integrators.solve(oscillator, Z0, torch.tensor([0.0, 1.0]), method="verlet")


def test_rollout_and_solve_end_within_one_step_of_the_stop_signal():
    f = lambda z, t: -z  # noqa: E731
    z0 = torch.ones(2, 2, dtype=torch.float64)
    calls = []

    def after_five():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(integrators.Stopped, match="step 5 of 1000"):
        integrators.rollout(f, z0, 0.01, 1000, should_stop=after_five)
    assert len(calls) == 6
    calls.clear()
    with integrators.stopping(after_five):  # the ambient check reaches rollout and solve
        with pytest.raises(integrators.Stopped):
            integrators.solve(f, z0, torch.linspace(0, 10, 3, dtype=torch.float64))
        assert len(calls) == 6
        with integrators.stopping(None):  # an inner scope clears it
            integrators.rollout(f, z0, 0.01, 20)
        with pytest.raises(integrators.Stopped):  # leaving it restores the outer check
            integrators.rollout(f, z0, 0.01, 20)
        assert len(calls) == 7
    integrators.rollout(f, z0, 0.01, 20)  # and leaving the outer scope restores none
    assert len(calls) == 7
    assert not issubclass(integrators.Stopped, RuntimeError)  # not reported as an "error"
