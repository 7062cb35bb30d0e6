"""Generic checks of every registered system, parametrized over ``ALL_SYSTEMS``.

A system added to the registry is tested here automatically: what every system shares
(descriptions, parameters with bounds and docs, refusals), and for ODE systems the
physics and data interface of :class:`~conserv_core.systems.ODESystem`. Field systems are
checked through the shared :class:`~conserv_core.systems.System` interface only; their
own physics lives in their own test file.
"""

from __future__ import annotations

import math

import param
import pytest
import torch

from conserv_core import integrators
from conserv_core.systems import (
    ALL_SYSTEMS,
    FieldSystem,
    ODESystem,
    ParameterError,
    build,
    describe_range,
    get_system,
)

KEYS = sorted(ALL_SYSTEMS)
ODE_KEYS = [k for k in KEYS if ALL_SYSTEMS[k].kind == "ode"]

#: relative drift of a conserved invariant along a float64 RK4 rollout at the system's
#: reference step (observed: 1e-11 pendulum, 5e-10 n-body)
CONSERVATION_TOL = 1e-7
#: horizon of that rollout
CONSERVATION_T = 1.0


def numeric_params(cls) -> dict[str, param.Parameter]:
    """Every user-facing number: Numbers (Integers too) and numeric tuples (Ranges)."""
    return {name: p for name, p in cls.param.objects().items()
            if isinstance(p, (param.Number, param.NumericTuple))}


def bounded(p: param.Parameter) -> bool:
    return isinstance(p, param.Number) or getattr(p, "bounds", None) is not None


def with_nan(p: param.Parameter):
    if isinstance(p, param.NumericTuple):
        default = p.default if p.default is not None else (0.0,) * p.length
        return (math.nan,) + tuple(default[1:])
    return math.nan


def beyond(p: param.Parameter, end: int):
    """A value just past the lower (``end=0``) or upper (``end=1``) bound."""
    edge = p.bounds[end]
    step = max(1, abs(edge))
    v = edge - step if end == 0 else edge + step
    v = int(v) if isinstance(p, param.Integer) else float(v)
    if isinstance(p, param.NumericTuple):
        other = p.bounds[1 - end]
        return (v, other) if end == 0 else (other, v)
    return v


NUMERIC = [(k, n) for k in KEYS for n in numeric_params(ALL_SYSTEMS[k])]
BOUNDED = [(k, n, end) for k, n in NUMERIC for end in (0, 1)
           if bounded(ALL_SYSTEMS[k].param[n]) and ALL_SYSTEMS[k].param[n].bounds[end] is not None]


# -- every system ----------------------------------------------------------------------------
def test_registry_has_only_ode_and_field_systems():
    """Nothing registered falls outside the two kinds the tests below cover."""
    assert KEYS
    for key, cls in ALL_SYSTEMS.items():
        assert cls.key == key
        assert (cls.kind, issubclass(cls, ODESystem), issubclass(cls, FieldSystem)) in (
            ("ode", True, False), ("field", False, True)), key


def test_unknown_system_is_refused_listing_the_valid_ones():
    with pytest.raises(ParameterError) as err:
        get_system("no_such_system")
    for key in KEYS:
        assert key in str(err.value)


@pytest.mark.parametrize("key", KEYS)
def test_builds_with_defaults(key):
    sysm = get_system(key)
    assert type(sysm) is ALL_SYSTEMS[key]
    assert type(ALL_SYSTEMS[key]()) is ALL_SYSTEMS[key]


@pytest.mark.parametrize("key", KEYS)
def test_describes_itself(key):
    cls = ALL_SYSTEMS[key]
    assert isinstance(cls.title, str) and cls.title.strip()
    assert isinstance(cls.teaching_note, str) and len(cls.teaching_note.split()) >= 8
    assert cls.equations, "no equations"
    for what, latex in cls.equations.items():
        assert what.strip() and isinstance(latex, str) and latex.strip(), what
        assert "$" not in latex, (what, "equations are given without $")
        assert latex.count("{") == latex.count("}"), (what, "unbalanced braces")


@pytest.mark.parametrize("key", KEYS)
def test_invariant_names(key):
    sysm = get_system(key)
    names = sysm.invariant_names()
    assert isinstance(names, tuple) and names
    assert len(set(names)) == len(names)
    for name in names:
        assert isinstance(name, str) and name
        assert isinstance(sysm.is_conserved(name), bool), name


@pytest.mark.parametrize("key", KEYS)
def test_every_parameter_has_a_doc_and_every_number_bounds(key):
    cls = ALL_SYSTEMS[key]
    for name, p in cls.param.objects().items():
        if name == "name":
            continue
        assert p.doc and p.doc.strip(), f"{key}.{name} has no doc"
    for name, p in numeric_params(cls).items():
        assert bounded(p), f"{key}.{name} has no bounds"
        lo, hi = p.bounds
        assert lo is not None and hi is not None and lo < hi, (f"{key}.{name}", p.bounds)
        default = p.default if isinstance(p.default, tuple) else (p.default,)
        for v in default:
            assert v is None or lo <= v <= hi, (f"{key}.{name}", p.default, p.bounds)


@pytest.mark.parametrize("key, name", NUMERIC)
def test_nan_is_refused(key, name):
    cls = ALL_SYSTEMS[key]
    with pytest.raises(ParameterError, match=name):
        build(cls, **{name: with_nan(cls.param[name])})


@pytest.mark.parametrize("key, name, end", BOUNDED)
def test_out_of_range_is_refused_naming_parameter_and_range(key, name, end):
    cls = ALL_SYSTEMS[key]
    with pytest.raises(ParameterError) as err:
        get_system(key, **{name: beyond(cls.param[name], end)})
    msg = str(err.value)
    assert name in msg and describe_range(cls, name) in msg, msg


# -- ODE systems -----------------------------------------------------------------------------
@pytest.mark.parametrize("key", ODE_KEYS)
def test_true_flow_conserves_its_invariants(key):
    """Along a short float64 RK4 rollout of the true field, every invariant the system
    calls conserved stays put relative to its own drift scale."""
    sysm = get_system(key)
    conserved = [n for n in sysm.invariant_names() if sysm.is_conserved(n)]
    assert conserved, "a conservation lab system should conserve something at its defaults"
    z0 = sysm.sample_initial(6, seed=0)
    t = torch.linspace(0.0, CONSERVATION_T, 11, dtype=torch.float64)
    traj = integrators.solve(sysm.vector_field, z0, t, method="rk4", max_dt=sysm.reference_dt)  # (T, B, D)
    assert torch.equal(traj[0], z0)
    for name in conserved:
        fn = sysm.invariants()[name]
        q = torch.stack([fn(z) for z in traj])  # (T, B) or (T, B, k)
        change = (q - q[0]).abs() if q.dim() == 2 else (q - q[0]).norm(dim=-1)
        drift = change / sysm.invariant_scale(name, z0)  # (T, B)
        assert drift.max() < CONSERVATION_TOL, (name, float(drift.max()))


@pytest.mark.parametrize("key", ODE_KEYS)
def test_reference_rollout(key):
    sysm = get_system(key)
    z0 = sysm.sample_initial(3, seed=1)
    t = torch.tensor([0.0, 0.05, 0.2], dtype=torch.float64)
    traj = sysm.reference_rollout(z0, t)
    assert traj.shape == (3, 3, sysm.state_dim)
    assert torch.allclose(traj[0], z0)
    assert torch.isfinite(traj).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("key", ODE_KEYS)
def test_vector_field_and_invariants_keep_dtype(key, dtype):
    sysm = get_system(key)
    z64 = sysm.sample_initial(5, seed=2)
    z = z64.to(dtype)
    assert z.shape == (5, sysm.state_dim) and sysm.state_dim == 2 * sysm.dof
    f = sysm.vector_field(z)
    assert f.dtype == dtype and f.shape == z.shape and torch.isfinite(f).all()
    assert torch.equal(sysm.vector_field(z, 0.5), f)  # the integrators pass a time
    ref = sysm.vector_field(z64)
    assert torch.allclose(f.double(), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    q, p = sysm.split(z)
    assert q.shape == p.shape == (5, sysm.dof)
    for name, fn in sysm.invariants().items():
        value = fn(z)
        assert value.dtype == dtype and value.shape[0] == 5 and value.dim() in (1, 2), name
        scale = sysm.invariant_scale(name, z)
        assert scale.shape == (5,) and (scale > 0).all(), name


@pytest.mark.parametrize("key", ODE_KEYS)
def test_sample_data_is_seeded_and_has_the_documented_shapes(key):
    n_traj, n_points, t_span = 3, 5, 0.5
    sysm = build(ALL_SYSTEMS[key], n_traj=n_traj, n_points=n_points, t_span=t_span, noise=0.0)
    d = sysm.sample_data(seed=1)
    n, dim = n_traj * n_points, sysm.state_dim
    assert d.x.shape == d.dxdt.shape == (n, dim)
    assert d.z0.shape == (n_traj, dim) and d.t.shape == (n_points,)
    assert {v.dtype for v in (d.x, d.dxdt, d.z0, d.t)} == {torch.float32}
    assert float(d.t[0]) == 0.0 and float(d.t[-1]) == pytest.approx(t_span)
    assert torch.allclose(d.z0, sysm.sample_initial(n_traj, seed=1).float())
    again = sysm.sample_data(seed=1)
    assert all(torch.equal(a, b) for a, b in zip((d.x, d.dxdt, d.z0), (again.x, again.dxdt, again.z0)))
    assert not torch.allclose(sysm.sample_data(seed=2).x, d.x)
    # without noise the targets are the true field at the states
    d64 = sysm.sample_data(seed=1, dtype=torch.float64)
    assert d64.x.dtype == torch.float64
    assert torch.allclose(d64.dxdt, sysm.vector_field(d64.x), rtol=1e-10, atol=1e-10)
    assert sysm.sample_data(seed=1, n_traj=2).z0.shape == (2, dim)


@pytest.mark.parametrize("key", ODE_KEYS)
def test_sample_data_noise_is_seeded_and_on_the_states_only(key):
    noise = 0.05
    kw = dict(n_traj=4, n_points=50, t_span=0.5)
    clean = build(ALL_SYSTEMS[key], noise=0.0, **kw).sample_data(seed=3, dtype=torch.float64)
    noisy_sys = build(ALL_SYSTEMS[key], noise=noise, **kw)
    noisy = noisy_sys.sample_data(seed=3, dtype=torch.float64)
    assert torch.equal(noisy.x, noisy_sys.sample_data(seed=3, dtype=torch.float64).x)
    assert torch.allclose(noisy.dxdt, clean.dxdt)
    std = float((noisy.x - clean.x).std())
    assert 0.8 * noise < std < 1.2 * noise, std
    other = noisy_sys.sample_data(seed=4, dtype=torch.float64)
    clean_other = build(ALL_SYSTEMS[key], **kw).sample_data(seed=4, dtype=torch.float64)
    assert not torch.allclose(other.x - clean_other.x, noisy.x - clean.x)  # the seed sets the noise


@pytest.mark.parametrize("key", ODE_KEYS)
def test_sample_initial_is_seeded_and_scale_moves_out_of_distribution(key):
    sysm = get_system(key)
    z = sysm.sample_initial(32, seed=5)
    assert z.shape == (32, sysm.state_dim) and z.dtype == torch.float64
    assert torch.isfinite(z).all()
    assert torch.equal(z, sysm.sample_initial(32, seed=5))
    assert not torch.allclose(z, sysm.sample_initial(32, seed=6))
    assert sysm.sample_initial(4, seed=5, dtype=torch.float32).dtype == torch.float32
    far = sysm.sample_initial(32, seed=5, scale=3.0)
    assert far.shape == z.shape and torch.isfinite(far).all()
    assert not torch.allclose(far, z)
