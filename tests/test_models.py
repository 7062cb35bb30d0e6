"""Learned models: hard constraints by construction, exact Lagrangian mechanics, scales,
rollouts without graph growth, and build() refusals.

"By construction" means: on untrained weights, at inputs ten times outside the range the
scales were set from. Every constraint test also shows the unconstrained baseline failing
the same check, so the check itself can fail.
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch

from conserv_core import get_system, integrators, methods, models, training
from conserv_core.models import ARCHITECTURES
from conserv_core.systems import ALL_SYSTEMS, ParameterError, Pendulum

#: registry keys plus the variants of an architecture the generic tests also cover
VARIANTS = {"lnn_mechanical": ("lnn", {"form": "mechanical"})}
ALL_MODELS = [*ARCHITECTURES, *VARIANTS]
ODE_ARCHS = [k for k, c in ARCHITECTURES.items() if c.kind == "ode"] + list(VARIANTS)
FIELD_ARCHS = [k for k, c in ARCHITECTURES.items() if c.kind == "field"]
DTYPES = [torch.float32, torch.float64]

#: "zero to round-off": 256 units of the dtype's epsilon, relative to the natural scale
#: of the quantity (measured worst cases: ~40 eps for HNN's Hessian symmetry, ~20 eps for
#: the stream function's divergence, < 1 eps for HNN's dH/dt)
RTOL = {torch.float32: 256 * torch.finfo(torch.float32).eps,  # ≈ 3.1e-5
        torch.float64: 256 * torch.finfo(torch.float64).eps}  # ≈ 5.7e-14
#: LNN's acceleration is a linear solve with its mass matrix M_θ, so round-off is
#: amplified by cond(M_θ) (up to ~3e3 for untrained nets far out of range): its dE/dt
#: tolerance is LNN_ULPS · eps · cond(M_θ), per sample (measured worst: ~120)
LNN_ULPS = 1024
#: what an unconstrained network violates the same checks by (measured: O(1))
BASELINE_MIN_VIOLATION = 1e-2
#: ten times outside the unit training range
FAR = 10.0
#: exact Lagrangian mechanics in float64
LNN_EXACT_ATOL = 1e-10


# -- helpers ----------------------------------------------------------------------------
def _rows(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobian ``d out / d x``: ``(B, m), (B, n) -> (B, m, n)``."""
    return torch.stack([torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0]
                        for i in range(out.shape[1])], 1)


def _unit_data(dim: int, n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs with inputs uniform in [-1, 1]^dim and a generic linear target."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(n, dim, generator=g, dtype=torch.float64) - 1
    return x, x @ torch.randn(dim, dim, generator=g, dtype=torch.float64)


def _far(n: int, dim: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return FAR * (2 * torch.rand(n, dim, generator=g, dtype=torch.float64) - 1)


def _build(key: str, **kw) -> torch.nn.Module:
    """``models.build`` for a registry key or one of :data:`VARIANTS`."""
    arch, extra = VARIANTS.get(key, (key, {}))
    return models.build(arch, **extra, **kw)


def _kind(key: str) -> str:
    return ARCHITECTURES[VARIANTS.get(key, (key,))[0]].kind


def _dof_step(key: str) -> int:
    """Degrees of freedom come in steps of this (2 for a model of planar bodies)."""
    return getattr(ARCHITECTURES[VARIANTS.get(key, (key,))[0]], "dof_step", 1)


def _ode_model(arch: str, dof: int, dtype: torch.dtype, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = _build(arch, dof=dof, width=32, **kw).to(dtype)
    model.set_scales(*_unit_data(2 * dof, seed=seed))
    return model


def _field_data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Training points [x, y, t] in [0, 2π)² × [0, 1] and velocities of spread ~1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([2 * math.pi * torch.rand(n, 2, generator=g, dtype=torch.float64),
                   torch.rand(n, 1, generator=g, dtype=torch.float64)], -1)
    return x, torch.randn(n, 2, generator=g, dtype=torch.float64) + torch.tensor([0.3, -0.2], dtype=torch.float64)


def _field_model(arch: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = models.build(arch, width=32, n_modes=3).to(dtype)
    model.set_scales(*_field_data(seed=seed))
    return model


def _symplectic_J(dof: int, dtype: torch.dtype) -> torch.Tensor:
    eye = torch.eye(dof, dtype=dtype)
    zero = torch.zeros(dof, dof, dtype=dtype)
    return torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)


# -- registry and build -----------------------------------------------------------------
def test_registry_declares_what_the_trainer_needs():
    assert set(ARCHITECTURES) == {"mlp", "hnn", "lnn", "phnn", "shnn", "field_mlp", "divfree"}
    coords = {k: c.coords for k, c in ARCHITECTURES.items()}
    assert coords == {"mlp": "canonical", "hnn": "canonical", "lnn": "velocity", "phnn": "canonical",
                      "shnn": "canonical", "field_mlp": "field", "divfree": "field"}
    learned = {k for k, c in ARCHITECTURES.items() if "learned_energy" in c.capabilities}
    assert learned == {"hnn", "lnn", "phnn", "shnn"}
    kept = {k for k, c in ARCHITECTURES.items() if "conserves_learned_energy" in c.capabilities}
    assert kept == {"hnn", "lnn", "shnn"}  # the port-Hamiltonian model's energy may fall
    for cls in ARCHITECTURES.values():
        assert cls.default_activation in models.ACTIVATIONS


def test_every_architecture_fills_the_contract():
    """Each class declares its flags in its own body (none inherited, none defaulted) and
    builds itself: ``build`` branches on no class."""
    for key, cls in ARCHITECTURES.items():
        assert issubclass(cls, models.Model), key
        for flag in models.base.FLAGS:
            assert flag in vars(cls), (key, flag)
        assert cls.capabilities <= set(models.CAPABILITIES), key
        assert ("learned_energy" in cls.capabilities) == issubclass(cls, models.EnergyModel), key
        assert (cls.kind == "field") == issubclass(cls, models.FieldModel), key


def _declare(**flags):
    body = dict(kind="ode", coords="canonical", default_activation="tanh", capabilities=frozenset())
    body.update(flags)
    body = {k: v for k, v in body.items() if v is not None}
    body.update(__init__=lambda self, state_dim, **kw: torch.nn.Module.__init__(self),
                forward=lambda self, z, t=None: z, set_scales=lambda self, x, y: None)
    return type("Made", (models.Model,), body)


def test_a_model_that_leaves_a_flag_out_or_invents_a_capability_is_refused():
    assert _declare().capabilities == frozenset()
    for flag in models.base.FLAGS:
        with pytest.raises(TypeError, match=f"Made must declare '{flag}'"):
            _declare(**{flag: None})
    with pytest.raises(TypeError, match="unknown capabilities 'conserves_mass'"):
        _declare(capabilities=frozenset({"conserves_mass"}))
    with pytest.raises(TypeError, match="EnergyModels"):
        _declare(capabilities=frozenset({"learned_energy"}))
    with pytest.raises(TypeError, match="'pair_potential' but has no such member"):
        _declare(capabilities=frozenset({"pair_potential"}))

    with pytest.raises(TypeError, match="Inherits must declare 'kind'"):
        class Inherits(models.HamiltonianNN):  # an HNN's flags would be a guess: declare them
            pass
    with pytest.raises(TypeError, match="abstract"):
        models.Model()


def test_register_refuses_a_taken_key_and_a_class_that_is_not_a_model():
    with pytest.raises(ValueError, match="'hnn' is already registered"):
        models.register("hnn", models.HamiltonianNN)
    with pytest.raises(TypeError, match="subclass of models.Model"):
        models.register("plain", torch.nn.Linear)
    with pytest.raises(TypeError, match="abstract"):
        models.register("energy", models.EnergyModel)
    made = _declare()
    with models.registered("made", made):
        assert models.ARCHITECTURES["made"] is made
        assert isinstance(models.build("made", dof=1, width=8), made)
    assert "made" not in models.ARCHITECTURES


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("activation", list(models.ACTIVATIONS))
def test_every_activation_builds_and_runs(arch, activation):
    torch.manual_seed(0)
    model = models.build(arch, dof=2, width=8, depth=1, activation=activation)
    if model.kind == "ode":
        out = model(torch.randn(5, 4))
    else:
        out = model(torch.rand(5, 2) * 6, 0.5)
    assert out.shape == (5, 4) if model.kind == "ode" else (5, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=3), r"width must be an integer in \[4, 1024\]"),
    (dict(width=1025), r"width must be an integer in \[4, 1024\]"),
    (dict(width=64.0), r"width must be an integer in \[4, 1024\]"),
    (dict(width=True), r"width must be an integer in \[4, 1024\]"),
    (dict(depth=0), r"depth must be an integer in \[1, 8\]"),
    (dict(depth=9), r"depth must be an integer in \[1, 8\]"),
    (dict(activation="relu"), r"activation must be one of 'tanh', 'softplus', 'silu', 'sin'"),
    (dict(dof=None, state_dim=0), r"state_dim must be an integer in \[1, 256\]"),
    (dict(dof=None, state_dim=3), r"state_dim must be even"),
    (dict(dof=0), r"dof must be an integer in \[1, 128\]"),
    (dict(dof=1, state_dim=4), r"state_dim must equal 2\*dof"),
    (dict(dof=None, state_dim=None), r"needs state_dim \(or dof\)"),
])
def test_build_refuses_bad_values_naming_parameter_and_range(kwargs, match):
    args = dict(dof=1) | kwargs
    with pytest.raises(ParameterError, match=match):
        models.build("hnn", **args)


def test_build_refuses_unknown_arch_and_bad_modes():
    with pytest.raises(ValueError, match="arch must be one of mlp, hnn, lnn, phnn, shnn, field_mlp, divfree"):
        models.build("transformer", dof=1)
    with pytest.raises(ValueError, match=r"n_modes must be an integer in \[1, 32\]"):
        models.build("divfree", n_modes=0)
    # the same bounds are declared once, where the UI reads them
    assert models.ModelSpec.param.width.bounds == (4, 1024)
    assert models.ModelSpec.param.depth.bounds == (1, 8)


@pytest.mark.parametrize("arch", ODE_ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ode_models_shapes_dtypes_and_scales_checks(arch, dtype):
    model = _ode_model(arch, dof=2, dtype=dtype)
    z = torch.randn(7, 4, dtype=dtype)
    out = model(z, 0.0)
    assert out.shape == (7, 4) and out.dtype == dtype and torch.isfinite(out).all()
    assert torch.equal(model(z), out)  # autonomous: t is ignored
    if "learned_energy" in model.capabilities:
        energy = model.learned_energy(z)
        assert energy.shape == (7,) and energy.dtype == dtype
    else:
        with pytest.raises(NotImplementedError):
            model.learned_energy(z)
    with pytest.raises(ValueError, match=r"expected x \(N, 4\) and y \(N, 4\)"):
        model.set_scales(torch.zeros(10, 4), torch.zeros(10, 3))


@pytest.mark.parametrize("arch", FIELD_ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_field_models_shapes_time_forms_and_periodicity(arch, dtype):
    model = _field_model(arch, dtype)
    xy = 2 * math.pi * torch.rand(6, 2, dtype=dtype)
    u = model(xy, 0.7)
    assert u.shape == (6, 2) and u.dtype == dtype and torch.isfinite(u).all()
    tol = dict(rtol=RTOL[dtype] * 100, atol=RTOL[dtype] * 100)
    torch.testing.assert_close(model(xy, torch.tensor(0.7, dtype=dtype)), u, **tol)
    torch.testing.assert_close(model(xy, torch.full((6,), 0.7, dtype=dtype)), u, **tol)
    # a (B,) time tensor means one time per point
    ts = torch.linspace(0, 1, 6, dtype=dtype)
    per_point = model(xy, ts)
    for i in range(6):
        torch.testing.assert_close(per_point[i], model(xy[i : i + 1], float(ts[i]))[0], **tol)
    # the periodic features make u 2π-periodic in x and y
    shift = torch.tensor([2 * math.pi, -4 * math.pi], dtype=dtype)
    torch.testing.assert_close(model(xy + shift, 0.7), u, rtol=1e-3 if dtype == torch.float32 else 1e-9,
                               atol=1e-3 if dtype == torch.float32 else 1e-9)
    assert models.divergence(model, xy, 0.7).shape == (6,)
    with pytest.raises(ValueError, match="one value per point"):
        model(xy, torch.zeros(5, dtype=dtype))


# -- hard constraints, by construction ----------------------------------------------------
@pytest.mark.parametrize("arch", [k for k in ODE_ARCHS
                                  if k in ARCHITECTURES and ARCHITECTURES[k].coords == "canonical"
                                  and ("conserves_learned_energy" in ARCHITECTURES[k].capabilities)
                                  == ("learned_energy" in ARCHITECTURES[k].capabilities)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dof", [1, 3])
def test_canonical_flow_is_hamiltonian_far_out_of_range(arch, dtype, dof):
    """A vector field is (locally) Hamiltonian iff Jᵀ·Df is symmetric (it is then the
    Hessian of H). HNN: to round-off, untrained, 10× out of range. Baseline: O(1) off."""
    dof *= _dof_step(arch)  # the symmetric HNN: 1 and 3 planar bodies
    model = _ode_model(arch, dof, dtype)
    z = _far(256, 2 * dof).to(dtype).requires_grad_(True)
    jac = _rows(model(z), z)  # (B, D, D)
    a = _symplectic_J(dof, dtype).T @ jac
    asym = ((a - a.mT).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).detach()
    if "learned_energy" in model.capabilities:
        assert asym.max() <= RTOL[dtype], f"max asymmetry {asym.max():.2e}"
    else:
        assert asym.median() >= BASELINE_MIN_VIOLATION


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dof", [1, 3])
def test_hnn_energy_rate_is_zero_far_out_of_range(dtype, dof):
    """dH_θ/dt = ∇H_θ · J∇H_θ = 0, relative to |∇H_θ||f|; another network's H is not
    conserved by this flow (the check can fail)."""
    model = _ode_model("hnn", dof, dtype)
    z = _far(256, 2 * dof).to(dtype).requires_grad_(True)
    f = model(z).detach()
    for other, expect_zero in ((model, True), (_ode_model("hnn", dof, dtype, seed=5), False)):
        (grad_h,) = torch.autograd.grad(other.learned_energy(z).sum(), z)
        rel = (grad_h * f).sum(-1).abs() / (grad_h.norm(dim=-1) * f.norm(dim=-1))
        if expect_zero:
            assert rel.max() <= RTOL[dtype], f"max |dH/dt| rel {rel.max():.2e}"
        else:
            assert rel.median() >= BASELINE_MIN_VIOLATION


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_hnn_field_without_a_graph_is_autograds_bit_for_bit(dtype, depth):
    """A rollout (no grad) takes the written-out gradient of H_θ; training the autograd
    one. They must be the same numbers, far out of range too, or a run's OOD curves would
    depend on whether a graph was wanted. (A planted ``grad * (1 - y*y)`` for tanh's
    backward already fails: it rounds differently.)"""
    model = models.build("hnn", state_dim=6, depth=depth, generator=torch.Generator().manual_seed(3)).to(dtype)
    model.set_scales(torch.randn(50, 6, dtype=dtype) * 2, torch.randn(50, 6, dtype=dtype))
    z = _far(256, 6).to(dtype)
    assert models.mlp.has_trunk_gradient(model.net)
    assert model._written_out_gradient  # the rollout below takes the written-out path
    with torch.no_grad():
        fast = model(z)
    slow = models.hamiltonian_vector_field(model.hamiltonian, z, create_graph=False)
    assert torch.equal(fast, slow), (fast - slow).abs().max()
    # an activation without a written-out backward keeps autograd's path
    soft = models.build("hnn", state_dim=6, activation="softplus", generator=torch.Generator().manual_seed(3))
    assert not models.mlp.has_trunk_gradient(soft.net)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dof", [1, 3])
@pytest.mark.parametrize("form, angles", [("generic", ()), ("generic", (0,)), ("mechanical", ()),
                                          ("mechanical", (0,))])
def test_lnn_energy_rate_is_zero_far_out_of_range(dtype, dof, form, angles):
    """dE_θ/dt = ∇E_θ · f = 0 along LNN's own flow, E_θ = q̇·∂L/∂q̇ − L, to round-off
    amplified by the mass matrix's condition number; not for another network's E.
    Both forms, with and without angle features."""
    model = _ode_model("lnn", dof, dtype, form=form, angles=angles)
    s = _far(256, 2 * dof).to(dtype).requires_grad_(True)
    f = model(s).detach()
    (grad_e,) = torch.autograd.grad(model.learned_energy(s).sum(), s)
    rel = (grad_e * f).sum(-1).abs() / (grad_e.norm(dim=-1) * f.norm(dim=-1))
    # condition number of M_θ = ∂²L/∂q̇² at each sample
    q, v = s[:, :dof].detach(), s[:, dof:].detach().requires_grad_(True)
    (gv,) = torch.autograd.grad(model.lagrangian(q, v).sum(), v, create_graph=True)
    sv = torch.linalg.svdvals(_rows(gv, v).detach().double())
    cond = (sv[:, 0] / sv[:, -1]).to(dtype)
    bound = LNN_ULPS * torch.finfo(dtype).eps * cond
    assert (rel <= bound).all(), f"worst rel/bound {(rel / bound).max():.2f}"
    assert rel.median() <= RTOL[dtype]
    other = _ode_model("lnn", dof, dtype, seed=5, form=form, angles=angles)
    (grad_o,) = torch.autograd.grad(other.learned_energy(s).sum(), s)
    rel_o = (grad_o * f).sum(-1).abs() / (grad_o.norm(dim=-1) * f.norm(dim=-1))
    assert rel_o.median() >= BASELINE_MIN_VIOLATION


@pytest.mark.parametrize("dof", [1, 3])
def test_mechanical_lnn_mass_matrix_is_positive_definite_and_is_the_velocity_hessian(dof):
    """The mechanical form's M_θ(q) is symmetric with eigenvalues ≥ MASS_FLOOR for any
    weights at any q, and it *is* ∂²L/∂q̇² (÷ σ_q̇ᵢσ_q̇ⱼ), so the Euler–Lagrange solve never
    meets a singular matrix; the generic form's velocity Hessian has no such floor."""
    model = _ode_model("lnn", dof, torch.float64, form="mechanical")
    s = _far(256, 2 * dof)
    q, v = s[:, :dof], s[:, dof:].clone().requires_grad_(True)
    M = model.mass_matrix(q).detach()
    torch.testing.assert_close(M, M.mT, rtol=0, atol=0)
    assert models.lagrangian.MASS_FLOOR > 0
    assert torch.linalg.eigvalsh(M).min() >= 0.999 * models.lagrangian.MASS_FLOOR
    (gv,) = torch.autograd.grad(model.lagrangian(q, v).sum(), v, create_graph=True)
    sigma = model.x_std[dof:]
    hess = _rows(gv, v).detach() * sigma[:, None] * sigma[None, :]
    torch.testing.assert_close(hess, M, rtol=1e-12, atol=1e-12)
    # the gauge: V is measured from the reference configuration, so E_θ = 0 at rest there
    rest = torch.cat([model.x_mean[:dof], torch.zeros(dof, dtype=torch.float64)])[None]
    assert abs(float(model.learned_energy(rest).detach())) < 1e-12
    generic = _ode_model("lnn", dof, torch.float64)
    (gg,) = torch.autograd.grad(generic.lagrangian(q, v).sum(), v, create_graph=True)
    assert torch.linalg.eigvalsh(_rows(gg, v).detach()).min() < 0  # indefinite somewhere


@pytest.mark.parametrize("form", ["generic", "mechanical"])
def test_angle_features_make_the_model_periodic_in_those_coordinates_only(form):
    """With ``angles=(0,)`` the model is exactly 2π-periodic in q₀ (a path going over the
    top sees no seam) and not in q₁; without it, not periodic in q₀ either."""
    model = _ode_model("lnn", 2, torch.float64, form=form, angles=(0,))
    s = _far(64, 4)
    turn0 = torch.tensor([2 * math.pi, 0, 0, 0], dtype=torch.float64)
    turn1 = torch.tensor([0, 2 * math.pi, 0, 0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(s + 3 * turn0), model(s), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(model.learned_energy(s - turn0), model.learned_energy(s), rtol=1e-9, atol=1e-9)
        assert (model(s + turn1) - model(s)).abs().max() > 1e-3
        plain = _ode_model("lnn", 2, torch.float64, form=form)
        assert (plain(s + turn0) - plain(s)).abs().max() > 1e-3


@pytest.mark.slow
def test_mechanical_lnn_cannot_run_away():
    """Untrained mechanical LNN on a torus of angles, started fast, far outside its
    training scale: E_θ = ½vᵀMv + V is conserved and V is bounded on the torus, so
    |v|² ≤ 2 (E_θ(0) − min V) / MASS_FLOOR along the whole path (v = q̇/σ). The generic
    form, whose velocity Hessian can turn singular, has no such bound."""
    model = _ode_model("lnn", 2, torch.float64, form="mechanical", angles=(0, 1))
    s0 = _far(16, 4, seed=3)
    with torch.no_grad():
        _, path = integrators.rollout(model, s0, 2e-3, 2000, method="rk4", every=20)
        assert torch.isfinite(path).all()
        energy = model.learned_energy(path.reshape(-1, 4)).reshape(path.shape[:2])
        grid = torch.linspace(-math.pi, math.pi, 121, dtype=torch.float64)
        q = torch.cartesian_prod(grid, grid)
        v_min = float((-model.lagrangian(q, torch.zeros_like(q))).min())  # V on a fine grid
    assert ((energy - energy[0]).abs() <= 1e-5 * energy[0].abs().clamp_min(1.0)).all()
    speed2 = (path[..., 2:] / model.x_std[2:]).pow(2).sum(-1)
    bound = 2 * (energy[0] - v_min + 0.05 * energy[0].abs()) / models.lagrangian.MASS_FLOOR
    assert (speed2 <= bound).all()


def test_build_refuses_bad_lnn_form_and_angles():
    with pytest.raises(ParameterError, match="form must be one of generic, mechanical"):
        models.build("lnn", dof=2, form="cartesian")
    with pytest.raises(ParameterError, match=r"angles must be coordinate indices in \[0, 1\]"):
        models.build("lnn", dof=2, angles=(2,))
    with pytest.raises(ParameterError, match="angles must be coordinate indices"):
        models.build("lnn", dof=2, angles=(True,))


@pytest.mark.parametrize("arch", FIELD_ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [0.0, 0.37, -10.0, 10.0])
def test_field_divergence_free_far_out_of_range(arch, dtype, t):
    """divfree: ∇·u = 0 to round-off relative to |∇u|, at points far outside the
    fundamental domain and times 10× outside the training window; baseline: O(1)."""
    model = _field_model(arch, dtype)
    xy = (_far(256, 2) * 2 * math.pi).to(dtype).requires_grad_(True)
    grad_u = _rows(model(xy, t), xy)  # (B, 2, 2)
    div_ref = (grad_u[:, 0, 0] + grad_u[:, 1, 1]).detach()
    div = models.divergence(model, xy, t).detach()
    torch.testing.assert_close(div, div_ref, rtol=0, atol=RTOL[dtype] * float(grad_u.abs().max()))
    rel = div.abs() / grad_u.flatten(1).norm(dim=1).detach()
    if arch == "divfree":
        assert rel.max() <= RTOL[dtype], f"max |div u| rel {rel.max():.2e}"
    else:
        assert rel.median() >= BASELINE_MIN_VIOLATION


class _AnalyticField(torch.nn.Module):
    """u = (a sin x cos y, b cos x sin y), ∇·u = (a + b) cos x cos y."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))

    def forward(self, xy, t):
        x, y = xy[:, 0], xy[:, 1]
        return torch.stack([self.a * x.sin() * y.cos(), self.b * x.cos() * y.sin()], -1)


def test_divergence_is_exact_and_a_differentiable_loss():
    field = _AnalyticField()
    xy = torch.rand(50, 2, dtype=torch.float64) * 6
    exact = 1.0 * torch.cos(xy[:, 0]) * torch.cos(xy[:, 1])
    div = models.divergence(field, xy, 0.0)
    torch.testing.assert_close(div, exact, rtol=0, atol=1e-14)
    div.pow(2).mean().backward()  # d/da mean((a+b)² c²) = 2(a+b) mean(c²) = d/db
    expected = 2 * exact.pow(2).mean()
    torch.testing.assert_close(field.a.grad, expected)
    torch.testing.assert_close(field.b.grad, expected)
    with torch.no_grad():
        assert not models.divergence(field, xy, 0.0).requires_grad


# -- exact Lagrangian mechanics -----------------------------------------------------------
def test_lnn_with_true_pendulum_lagrangian_gives_exact_accelerations():
    pend = Pendulum(mass=2.0, length=0.5, gravity=9.81)
    model = models.LagrangianNN(1, lagrangian=pend.lagrangian)
    g = torch.Generator().manual_seed(3)
    q = 20 * torch.rand(300, 1, generator=g, dtype=torch.float64) - 10  # far beyond one turn
    qdot = 60 * torch.rand(300, 1, generator=g, dtype=torch.float64) - 30
    with torch.no_grad():
        out = model(torch.cat([q, qdot], -1))
    torch.testing.assert_close(out[:, :1], qdot, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1:], -(9.81 / 0.5) * torch.sin(q), rtol=0, atol=LNN_EXACT_ATOL)
    # its energy function is the Legendre transform p·q̇ − L, i.e. the Hamiltonian
    # (up to the constant the system's potential may carry)
    p = pend.momentum(q, qdot)
    energy = model.learned_energy(torch.cat([q, qdot], -1))
    torch.testing.assert_close(energy, (p * qdot).sum(-1) - pend.lagrangian(q, qdot), rtol=0, atol=LNN_EXACT_ATOL)
    offset = energy - pend.energy(torch.cat([q, p], -1))
    torch.testing.assert_close(offset, offset[:1].expand(300), rtol=0, atol=LNN_EXACT_ATOL)


def _double_pendulum_lagrangian(m1, m2, l1, l2, g):
    """q = (θ1, θ2) from the downward vertical: a q-dependent, non-diagonal mass matrix."""

    def lagrangian(q, qdot):
        t1, t2, w1, w2 = q[:, 0], q[:, 1], qdot[:, 0], qdot[:, 1]
        kinetic = (0.5 * (m1 + m2) * l1**2 * w1**2 + 0.5 * m2 * l2**2 * w2**2
                   + m2 * l1 * l2 * w1 * w2 * torch.cos(t1 - t2))
        potential = -(m1 + m2) * g * l1 * torch.cos(t1) - m2 * g * l2 * torch.cos(t2)
        return kinetic - potential

    return lagrangian


def _double_pendulum_acceleration(q, qdot, m1, m2, l1, l2, g):
    """The closed form obtained by solving the 2×2 Euler–Lagrange system by hand."""
    t1, t2, w1, w2 = q[:, 0], q[:, 1], qdot[:, 0], qdot[:, 1]
    d = t1 - t2
    den = 2 * m1 + m2 - m2 * torch.cos(2 * d)
    a1 = (-g * (2 * m1 + m2) * torch.sin(t1) - m2 * g * torch.sin(t1 - 2 * t2)
          - 2 * torch.sin(d) * m2 * (w2**2 * l2 + w1**2 * l1 * torch.cos(d))) / (l1 * den)
    a2 = (2 * torch.sin(d) * (w1**2 * l1 * (m1 + m2) + g * (m1 + m2) * torch.cos(t1)
                              + w2**2 * l2 * m2 * torch.cos(d))) / (l2 * den)
    return torch.stack([a1, a2], -1)


def test_lnn_with_double_pendulum_lagrangian_gives_exact_accelerations():
    params = dict(m1=1.3, m2=0.7, l1=1.1, l2=0.6, g=9.81)
    model = models.LagrangianNN(2, lagrangian=_double_pendulum_lagrangian(**params))
    g = torch.Generator().manual_seed(4)
    q = 2 * math.pi * (2 * torch.rand(300, 2, generator=g, dtype=torch.float64) - 1)
    qdot = 10 * (2 * torch.rand(300, 2, generator=g, dtype=torch.float64) - 1)
    with torch.no_grad():
        qddot = model(torch.cat([q, qdot], -1))[:, 2:]
    torch.testing.assert_close(qddot, _double_pendulum_acceleration(q, qdot, **params),
                               rtol=0, atol=LNN_EXACT_ATOL)


def test_tikhonov_solve_is_exact_when_well_posed_and_finite_when_singular():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(20, 3, 3, generator=g, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(20, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(models.tikhonov_solve(a, b), torch.linalg.solve(a, b), rtol=1e-12, atol=1e-12)
    # rank one: finite, bounded by |b| / (2μ), differentiable; a plain solve is not
    u = torch.randn(20, 3, 1, generator=g, dtype=torch.float64)
    singular = (u @ u.mT).requires_grad_(True)
    x = models.tikhonov_solve(singular, b)
    mu = torch.finfo(torch.float64).eps ** 0.5 * torch.linalg.matrix_norm(singular.detach())
    assert torch.isfinite(x).all() and (x.norm(dim=-1) <= b.norm(dim=-1) / (2 * mu) * (1 + 1e-6)).all()
    x.sum().backward()
    assert torch.isfinite(singular.grad).all()
    plain = torch.linalg.lstsq(singular.detach(), b.unsqueeze(-1), driver="gelsd", rcond=0.0).solution
    assert not (plain.norm(dim=(-2, -1)) <= b.norm(dim=-1) / (2 * mu)).all()
    # an L linear in q̇ (zero mass matrix) gives zero acceleration, not NaN
    flat = models.LagrangianNN(1, lagrangian=lambda q, v: (q * v).sum(-1) - q.pow(2).sum(-1))
    assert torch.equal(flat(torch.ones(4, 2, dtype=torch.float64))[:, 1], torch.zeros(4, dtype=torch.float64))


# -- scales --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ALL_MODELS)
def test_scales_are_unit_covariant(arch):
    """Change the units of q (×α), p (×β) and time (×τ) in the training data: with scales
    set from the new data, the same weights predict the same physics in the new units.
    This is what makes the normalisation physically consistent (for HNN: one energy
    scale for J∇H), and the predictions come out at the data's size."""
    alpha, beta, tau = 50.0, 20.0, 0.25
    torch.manual_seed(0)
    model = _build(arch, dof=2, width=32).double()
    torch.manual_seed(0)
    scaled = _build(arch, dof=2, width=32).double()
    if model.kind == "field":
        x, y = _field_data()
        t_unit = torch.tensor([1.0, 1.0, tau], dtype=torch.float64)
        model.set_scales(x, y)
        scaled.set_scales(x * t_unit, y / tau)
        xy, t = _far(64, 2) * math.pi, torch.linspace(-3, 5, 64, dtype=torch.float64)
        torch.testing.assert_close(scaled(xy, tau * t), model(xy, t) / tau, rtol=1e-10, atol=1e-12)
        ratio = scaled(x[:, :2], x[:, 2] * tau).pow(2).mean().sqrt() / (y / tau).pow(2).mean().sqrt()
    else:
        x, y = _unit_data(4)
        if model.coords == "canonical":  # [q, p] and [q̇, ṗ]
            ax = torch.tensor([alpha, alpha, beta, beta], dtype=torch.float64)
            ay = ax / tau
        else:  # [q, q̇] and [q̇, q̈]
            ax = torch.tensor([alpha, alpha, alpha / tau, alpha / tau], dtype=torch.float64)
            ay = ax / tau
            y = torch.cat([x[:, 2:], y[:, 2:]], -1)  # consistent velocity columns
        model.set_scales(x, y)
        scaled.set_scales(x * ax, y * ay)
        s = _far(64, 4)
        torch.testing.assert_close(scaled(s * ax), model(s) * ay, rtol=1e-9, atol=1e-12)
        ratio = scaled(x * ax).pow(2).mean().sqrt() / (y * ay).pow(2).mean().sqrt()
    ratio = float(ratio.detach())
    assert 0.02 < ratio < 50, f"untrained output / target RMS = {ratio:.3g}"


# -- training and rollouts ----------------------------------------------------------------
@pytest.mark.parametrize("arch", ALL_MODELS)
def test_training_gradients_reach_every_parameter(arch):
    """With grad enabled the models build the graph they need (create_graph), so a loss
    on their output — or on the divergence penalty — trains every parameter."""
    if _kind(arch) == "ode":
        dof = 2 * _dof_step(arch)  # the symmetric HNN: two bodies, so its pair network is used
        model = _ode_model(arch, dof, torch.float32)
        x, y = (v.float() for v in _unit_data(2 * dof))
        loss = (model(x) - y).pow(2).mean()
    else:
        model = _field_model(arch, torch.float32)
        x, y = (v.float() for v in _field_data())
        loss = (model(x[:, :2], x[:, 2]) - y).pow(2).mean() + models.divergence(model, x[:, :2], x[:, 2]).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("weight"):
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", ODE_ARCHS)
def test_backprop_through_a_short_rollout(arch):
    """Multi-step losses differentiate through the integrator: states carrying a graph
    are differentiated in place, not detached."""
    dof = 2 * _dof_step(arch) if _dof_step(arch) > 1 else 1  # the symmetric HNN: 2 bodies, a pair
    model = _ode_model(arch, dof, torch.float64)
    z0 = _unit_data(2 * dof)[0][:8]
    _, traj = integrators.rollout(model, z0, 0.05, 3, method="rk4")
    traj[-1].pow(2).sum().backward()
    first = next(p for n, p in model.named_parameters() if n.endswith("0.weight"))
    assert first.grad is not None and first.grad.abs().sum() > 0
    # the same loss by finite differences of one weight
    with torch.no_grad():
        h = 1e-6
        first[0, 0] += h
        up = integrators.rollout(model, z0, 0.05, 3)[1][-1].pow(2).sum()
        first[0, 0] -= 2 * h
        down = integrators.rollout(model, z0, 0.05, 3)[1][-1].pow(2).sum()
        first[0, 0] += h
    torch.testing.assert_close(first.grad[0, 0], (up - down) / (2 * h), rtol=1e-5, atol=1e-8)


class _SavedTensorCounter:
    """Counts tensors autograd saves for backward that are still alive: a graph kept by
    a rollout keeps them alive, a freed one does not."""

    class _Box:
        def __init__(self, t):
            self.t = t

    def __init__(self):
        self.live = weakref.WeakSet()
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda box: box.t)

    def _pack(self, t):
        # detached: a box holding a saved *output* would otherwise form a reference cycle
        # through its grad_fn that the garbage collector cannot see (values are unchanged;
        # double backward inside the counter is not exact, and not used)
        box = self._Box(t.detach())
        self.live.add(box)
        return box

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    def count(self) -> int:
        gc.collect()
        return len(self.live)


@pytest.mark.parametrize("arch", ALL_MODELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_grad_rollouts_keep_no_graph(arch, dtype):
    """20 RK4 steps under torch.no_grad(): plain outputs, and every temporary graph the
    models build internally (to differentiate H, L or ψ) is freed at each step (one kept
    per step would show after one step as after two hundred). The same counter sees the
    graph a grad-enabled rollout keeps, so it can fail."""
    kind = _kind(arch)
    dof = _dof_step(arch) if kind == "ode" else 1
    model = _ode_model(arch, dof, dtype) if kind == "ode" else _field_model(arch, dtype)
    start = (_unit_data(2 * dof)[0][:16] if kind == "ode" else 2 * math.pi * torch.rand(16, 2, dtype=torch.float64)).to(dtype)
    with _SavedTensorCounter() as counter:
        with torch.no_grad():
            out = model(start, 0.0)  # one evaluation: its output holds no graph either
            assert not out.requires_grad and counter.count() == 0
            _, traj = integrators.rollout(model, start, 0.01, 20, method="rk4")
        assert counter.count() == 0
        assert not traj.requires_grad and traj.grad_fn is None
        assert traj.dtype == dtype and torch.isfinite(traj).all()
        _, kept = integrators.rollout(model, start, 0.01, 2, method="rk4")
        assert kept.requires_grad and counter.count() > 0
        del kept
        assert counter.count() == 0


@pytest.mark.parametrize("arch", ALL_MODELS)
def test_inference_mode_gives_the_no_grad_result(arch):
    kind = _kind(arch)
    dof = _dof_step(arch) if kind == "ode" else 1
    model = _ode_model(arch, dof, torch.float64) if kind == "ode" else _field_model(arch, torch.float64)
    args = (_far(8, 2 * dof),) if kind == "ode" else (_far(8, 2), 0.3)
    with torch.no_grad():
        expected = model(*args)
    with torch.inference_mode():
        inferred = model(*args)
        if kind == "field":
            assert torch.isfinite(models.divergence(model, *args)).all()
        elif "learned_energy" in model.capabilities:
            assert torch.isfinite(model.learned_energy(args[0])).all()
    torch.testing.assert_close(inferred, expected, rtol=0, atol=0)


def test_hnn_learned_energy_stays_bounded_under_implicit_midpoint():
    """Symplectic integration of an (untrained) HNN: H_θ oscillates at O(dt²) instead of
    drifting, over 100 steps well outside the training range."""
    model = _ode_model("hnn", 1, torch.float64)
    z0 = _far(8, 2, seed=7) / 2
    with torch.no_grad():
        energies = []
        for dt in (0.04, 0.02):
            _, traj = integrators.rollout(model, z0, dt, int(2.0 / dt), method="implicit_midpoint")
            h = model.learned_energy(traj.reshape(-1, 2)).reshape(traj.shape[:2])
            energies.append((h - h[0]).abs().max() / h[0].abs().clamp_min(1e-3).max())
    assert energies[0] < 1e-2
    assert 2.5 < energies[0] / energies[1] < 6  # second order: halving dt quarters the error


# -- every method's model, from a run's config -------------------------------------------
METHOD_PAIRS = [(s, m) for s in ALL_SYSTEMS for m in methods.ALL_METHODS if methods.applies(m, get_system(s))]


@pytest.mark.parametrize("system,method", METHOD_PAIRS)
def test_every_method_builds_its_model_and_keeps_the_law_it_declares(system, method):
    """``Method.build_model`` from the system's recommended config gives a model in the
    coordinates the method declares, shape- and dtype-preserving; where the model declares
    that it conserves its learned energy, ``dE_θ/dt = ∇E_θ · f = 0`` at untrained weights on
    states 10× out of the training band (a new method is held to what it declares)."""
    sysm, m = get_system(system), methods.get_method(method)
    model = m.build_model(sysm, training.make_config(system, width=16))
    models.init_weights(model, torch.Generator().manual_seed(0))
    model = model.double()
    assert type(model).coords == m.coords(sysm)
    assert m.has_learned_energy(sysm) == ("learned_energy" in type(model).capabilities)
    if sysm.kind == "field":
        xy = 2 * math.pi * torch.rand(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        u = model(xy, 0.5)
        assert u.shape == (32, 2) and u.dtype == torch.float64 and torch.isfinite(u).all()
        return
    s = sysm.sample_initial(64, seed=3, scale=10.0).requires_grad_(True)  # any point: [q, p] or [q, q̇]
    f = model(s)
    assert f.shape == s.shape and f.dtype == torch.float64 and torch.isfinite(f).all()
    if "conserves_learned_energy" in type(model).capabilities:
        (g,) = torch.autograd.grad(model.learned_energy(s).sum(), s)
        rel = (g * f.detach()).sum(-1).abs() / (g.norm(dim=-1) * f.detach().norm(dim=-1))
        assert rel.median() <= RTOL[torch.float64], f"median |dE/dt| rel {rel.median():.2e}"
