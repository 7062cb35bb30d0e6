"""The symmetric HNN (``shnn``): momentum and angular momentum by Noether's theorem.

Checked on untrained weights, in float64, at states 10× outside the range its scales were
set from, against the plain HNN failing the same checks (so each check can fail). Planted
bugs that fail here: a pair feature that weights x and y differently (rotation broken:
L drifts), a kinetic term fed ``p_i`` rather than ``|p_i|²`` (rotation broken), and the
pair function fed ``q_i`` rather than ``q_i − q_j`` (translation broken: P drifts).
"""

from __future__ import annotations

import math

import pytest
import torch

from conserv_core import integrators, methods, models, training
from conserv_core.models.symmetric import SymmetricHNN
from conserv_core.systems import ParameterError, get_system

FAR = 10.0
#: round-off, relative to the natural scale of the quantity (float64)
ROUND_OFF = 1e-12


def nbody_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """States of the true ``n``-body system and their derivatives (float64)."""
    sysm = get_system("nbody", n_bodies=n)
    z = sysm.sample_initial(128, seed=seed)
    return z, sysm.vector_field(z)


def model_for(arch: str, n: int, seed: int = 0, width: int = 32) -> torch.nn.Module:
    """Untrained weights from ``seed``, scales from the true ``n``-body data."""
    model = models.build(arch, state_dim=4 * n, width=width, generator=torch.Generator().manual_seed(seed))
    model = model.double()
    model.set_scales(*nbody_data(n))
    return model


def far_states(n: int, count: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return FAR * (2 * torch.rand(count, 4 * n, generator=g, dtype=torch.float64) - 1)


def momentum(z: torch.Tensor) -> torch.Tensor:
    n2 = z.shape[-1] // 2
    return z[..., n2:].reshape(*z.shape[:-1], -1, 2).sum(-2)


def angular(z: torch.Tensor) -> torch.Tensor:
    n2 = z.shape[-1] // 2
    q, p = z[..., :n2].reshape(*z.shape[:-1], -1, 2), z[..., n2:].reshape(*z.shape[:-1], -1, 2)
    return (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).sum(-1)


def rates(model, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``dP/dt`` and ``dL/dt`` of the model's flow at ``z``, each relative to the size of
    the terms that cancel (per state): ``|Σ ṗ_i| / Σ|ṗ_i|`` and
    ``|Σ q̇_i × p_i + q_i × ṗ_i| / Σ(|q̇_i × p_i| + |q_i × ṗ_i|)``."""
    f = model(z)
    n2 = z.shape[-1] // 2
    q, p = z[:, :n2].reshape(len(z), -1, 2), z[:, n2:].reshape(len(z), -1, 2)
    dq, dp = f[:, :n2].reshape(len(z), -1, 2), f[:, n2:].reshape(len(z), -1, 2)
    dpdt = dp.sum(1).norm(dim=-1) / dp.norm(dim=-1).sum(1)
    a = dq[..., 0] * p[..., 1] - dq[..., 1] * p[..., 0]
    b = q[..., 0] * dp[..., 1] - q[..., 1] * dp[..., 0]
    dldt = (a + b).sum(1).abs() / (a.abs() + b.abs()).sum(1)
    return dpdt.detach(), dldt.detach()


@pytest.mark.parametrize("n", [2, 3, 5])
def test_momentum_and_angular_momentum_rates_vanish_for_any_weights(n):
    """Untrained, 10× out of range: dP/dt and dL/dt at round-off; the plain HNN's are
    O(1) on the same states."""
    z = far_states(n)
    dpdt, dldt = rates(model_for("shnn", n), z)
    assert float(dpdt.max()) <= ROUND_OFF, float(dpdt.max())
    assert float(dldt.max()) <= ROUND_OFF, float(dldt.max())
    hnn_p, hnn_l = rates(model_for("hnn", n), z)
    assert float(hnn_p.median()) > 1e-2 and float(hnn_l.median()) > 1e-2


def test_energy_is_invariant_under_translation_rotation_and_relabelling():
    model = model_for("shnn", 4)
    z = far_states(4, count=16)
    h = model.learned_energy(z).detach()
    n2 = 8
    q, p = z[:, :n2].reshape(16, 4, 2), z[:, n2:].reshape(16, 4, 2)
    shift = torch.tensor([3.0, -7.0], dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])

    def pack(qq, pp):
        return torch.cat([qq.reshape(16, -1), pp.reshape(16, -1)], -1)

    for moved in (pack(q + shift, p), pack(q @ rot.T, p @ rot.T), pack(q[:, perm], p[:, perm])):
        torch.testing.assert_close(model.learned_energy(moved), h, rtol=1e-12, atol=1e-12 * float(h.abs().max()))
    # relabelling the bodies relabels the vector field's blocks the same way
    f = model(z).detach()
    fq, fp = f[:, :n2].reshape(16, 4, 2), f[:, n2:].reshape(16, 4, 2)
    f_perm = model(pack(q[:, perm], p[:, perm])).detach()
    torch.testing.assert_close(f_perm, pack(fq[:, perm], fp[:, perm]), rtol=1e-12, atol=1e-12 * float(f.abs().max()))


def drift(q: torch.Tensor, scale: torch.Tensor) -> float:
    """max over time and starts of ``|Q(t) − Q(0)|`` over ``scale`` (per start)."""
    d = (q - q[:1]).abs()
    if d.dim() == 3:
        d = d.amax(-1)
    return float((d / scale).max())


@pytest.mark.slow
def test_rollouts_keep_momentum_under_rk4_and_angular_momentum_under_implicit_midpoint():
    """P is linear: any Runge–Kutta rollout keeps it to round-off. L is quadratic: implicit
    midpoint keeps it to the solve's tolerance; RK4 only approximately (its drift here is
    over 100× midpoint's). 300 steps of an untrained model on 3 bodies."""
    model = model_for("shnn", 3)
    sysm = get_system("nbody", n_bodies=3)
    z0 = sysm.sample_initial(8, seed=3)
    with torch.no_grad():
        _, rk4 = integrators.rollout(model, z0, sysm.dt, 300, "rk4")
        _, mid = integrators.rollout(model, z0, sysm.dt, 300, "implicit_midpoint")
    p_scale = momentum(z0.abs()).norm(dim=-1).clamp_min(1e-12)  # Σ|p| per axis, a size
    l_scale = sysm.invariant_scale("angular_momentum", z0)
    assert float((rk4[-1] - z0).norm(dim=-1).min()) > 0.1  # every state moved
    assert drift(momentum(rk4), p_scale) <= ROUND_OFF
    assert drift(angular(mid), l_scale) <= 1e-11
    assert drift(angular(rk4), l_scale) >= 100 * max(drift(angular(mid), l_scale), 1e-14)


def test_a_model_trained_on_three_bodies_runs_on_eight_with_momenta_kept():
    """Trained (briefly, for real) on 3 bodies, evaluated on 8: one set of weights, any
    number of bodies, and the rates still at round-off."""
    sysm = get_system("nbody", n_bodies=3)
    cfg = training.TrainConfig(steps=30, width=32, eval_every=30, n_test=2, seed=0, dtype="float64", horizon=2.0)
    tr = training.Trainer(sysm, "shnn", cfg)
    list(tr.iter_records())
    assert tr.step_count == 30
    z8 = far_states(8, count=16)
    dpdt, dldt = rates(tr.model, z8)
    assert float(dpdt.max()) <= ROUND_OFF and float(dldt.max()) <= ROUND_OFF
    assert torch.isfinite(tr.model(z8)).all()


def test_learned_pair_potential_vanishes_at_the_largest_distance():
    model = model_for("shnn", 3)
    r = torch.linspace(0.05, 4.0, 50, dtype=torch.float64)
    v = model.pair_potential(r)
    assert v.shape == (50,) and torch.isfinite(v).all() and float(v[-1]) == 0.0


def test_refusals_name_the_parameter_and_range():
    with pytest.raises(ParameterError, match=r"state_dim must be 4 × the number of planar bodies for shnn"):
        models.build("shnn", state_dim=6)
    with pytest.raises(ParameterError, match=r"method 'shnn' does not apply to system 'pendulum'; valid: "):
        methods.check_applies("shnn", get_system("pendulum"))
    assert "shnn" in methods.valid_methods(get_system("nbody"))
    with pytest.raises(ValueError, match="planar bodies"):
        SymmetricHNN(6)


@pytest.mark.slow
def test_with_a_trap_the_symmetric_model_is_wrong_by_construction():
    """The failure mode: a trap breaks translation symmetry, the truth's P swings (by more
    than 0.1 of its scale here), and the symmetric model, any weights, keeps P to
    round-off: its momentum error against the truth's P(t) is at least the swing."""
    sysm = get_system("nbody", n_bodies=2, trap=1.0)
    model = models.build("shnn", state_dim=8, width=32, generator=torch.Generator().manual_seed(0)).double()
    z0 = sysm.sample_initial(8, seed=3)
    model.set_scales(z0, sysm.vector_field(z0))
    with torch.no_grad():
        _, z_true = integrators.rollout(sysm.vector_field, z0, sysm.dt, 500, "rk4")
        _, z_model = integrators.rollout(model, z0, sysm.dt, 500, "rk4")
    scale = sysm.invariant_scale("momentum", z0)
    swing = ((momentum(z_true) - momentum(z0)).norm(dim=-1) / scale).amax(0)  # (B,)
    kept = ((momentum(z_model) - momentum(z0)).norm(dim=-1) / scale).amax(0)
    error = ((momentum(z_model) - momentum(z_true)).norm(dim=-1) / scale).amax(0)
    assert float(swing.min()) > 0.1 and float(kept.max()) <= ROUND_OFF
    assert (error >= swing - 1e-9).all()


@pytest.mark.slow
def test_cli_rolls_a_trained_model_out_on_more_bodies(tmp_path):
    """`--rollout-bodies`: trained on 2 bodies, the same weights on 5, with a table and
    JSON; momentum still at float32 round-off there."""
    import io
    import json

    from conserv_core import cli

    out = io.StringIO()
    path = tmp_path / "r.json"
    rc = cli.main(["run", "--system", "nbody", "--method", "shnn", "--steps", "20", "--horizon", "1",
                   "--n-test", "2", "--width", "16", "--quiet", "--rollout-bodies", "5", "--json", str(path)], out=out)
    assert rc == 0, out.getvalue()
    assert "rolled out on 5 bodies (trained on 2)" in out.getvalue()
    res = json.loads(path.read_text())["on_bodies"]
    assert (res["n_bodies"], res["trained_on"]) == (5, 2)
    assert max(res["methods"]["shnn"]["drift"]["momentum"]["rel"]) < 1e-5


@pytest.mark.parametrize("argv, needle", [
    (["--system", "pendulum", "--method", "hnn"], "needs the nbody system"),
    (["--system", "nbody", "--method", "hnn"], "applies to methods whose model runs on any number of bodies"),
    (["--system", "nbody", "--method", "shnn", "--rollout-bodies", "65"], r"must be an integer in \[2, 64\]"),
])
def test_cli_refuses_rollout_bodies_it_cannot_do_before_training(argv, needle, capsys):
    import io
    import re

    from conserv_core import cli

    if "--rollout-bodies" not in argv:
        argv = argv + ["--rollout-bodies", "5"]
    rc = cli.main(["run", *argv, "--steps", "5"], out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == 2 and re.search(needle, err) and len(err.strip().splitlines()) == 1, err


def test_rollout_bodies_needs_identical_bodies():
    with pytest.raises(ParameterError, match="identical bodies"):
        training.check_on_bodies(get_system("nbody", masses=[1.0, 2.0]), ["shnn"], 5)
