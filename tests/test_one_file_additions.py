"""A new method, a new system, a new architecture and a new soft constraint are one file
each: this one.

It defines, here and nowhere else, a method (a copy of the baseline under a new key), an
ODE system (a harmonic oscillator whose parameter is a frequency ``omega``, a name no
other system uses), an architecture (a separable HNN, ``H = T_θ(p) + V_θ(q)``, with an
``__init__`` of its own) with a method that trains it, and a soft constraint with a
setting of its own (an L1 penalty, ``l1_weight``) with a method that uses it. Registered
at runtime, with nothing in ``app/`` or the engine touched:

* the generic system, model and training tests, and the dashboard's every-system test,
  collect and pass for them (a pytest run with ``CONSERV_TEST_REGISTER`` naming this
  file, which ``conftest.py`` registers before collection);
* ``conserv methods`` and ``conserv systems`` list them;
* a headless dashboard session trains them and draws every view;
* the constraint trains, and its setting reaches the CLI (``--l1-weight``), links and a
  control in the dashboard's "Constraint settings" card, and leaves them with the block.

Each check fails if a key check creeps back in: an ``if key == "baseline"`` in the
trainer, a ``theme.COLORS[k]`` without a fallback, a system view chosen by key, or a
branch on the model class in ``models.build`` (the separable HNN's ``__init__`` takes
``dof`` and ``hidden``, not ``state_dim`` and ``width``: only its own ``from_spec``
builds it).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import panel as pn
import param
import pytest
import torch

import app
from app import settings, theme
from conserv_core import cli, constraints, integrators, methods, models, systems, training
from conserv_core.systems import ODESystem

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


class Oscillator(ODESystem):
    """``H = (p² + ω² q²) / 2``: the exact solution is a rotation at frequency ω."""

    key: ClassVar[str] = "oscillator"
    title: ClassVar[str] = "Harmonic oscillator (test)"
    equations: ClassVar[dict[str, str]] = {"Hamiltonian": r"H = \tfrac12 (p^2 + \omega^2 q^2)"}
    teaching_note: ClassVar[str] = "Circles in the (ωq, p) plane; the energy is their radius squared."

    omega = param.Number(default=1.5, bounds=(0.1, 10.0), doc="Angular frequency ω (1/s).")

    @property
    def dof(self) -> int:
        return 1

    def vector_field(self, z, t=None):
        return torch.cat([z[..., 1:], -self.omega**2 * z[..., :1]], -1)

    def energy(self, z):
        return 0.5 * (z[..., 1] ** 2 + self.omega**2 * z[..., 0] ** 2)

    def lagrangian(self, q, qdot):
        return (0.5 * qdot**2 - 0.5 * self.omega**2 * q**2).sum(-1)

    def momentum(self, q, qdot):
        return qdot

    def exact(self, z0, t):
        wt = (self.omega * t.to(z0.dtype)).reshape(-1, 1)
        q0, p0 = z0[:, 0], z0[:, 1]
        q = q0 * torch.cos(wt) + p0 / self.omega * torch.sin(wt)
        p = p0 * torch.cos(wt) - self.omega * q0 * torch.sin(wt)
        return torch.stack([q, p], -1)

    def reference_rollout(self, z0, t):
        return self.exact(z0, t)

    def sample_initial(self, n, seed=0, scale=1.0, dtype=torch.float64, device=None):
        g = torch.Generator().manual_seed(seed)
        r = (0.3 + 0.7 * torch.rand(n, generator=g, dtype=torch.float64)) * scale  # sqrt(2H) in [0.3, 1] × scale
        phase = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        z = torch.stack([r * torch.cos(phase) / self.omega, r * torch.sin(phase)], -1)
        return z.to(dtype=dtype, device=device)


class SeparableHNN(models.EnergyModel):
    """``H_θ(q, p) = s_H (T_θ(p̂) + V_θ(q̂))`` and ``ż = J∇H_θ``: ``(B, 2·dof) -> (B, 2·dof)``.

    A separable Hamiltonian, kinetic in the momenta and potential in the positions, each
    part its own small network on the standardised coordinates (``ẑ = (z − μ)/σ``).
    ``dH_θ/dt = ∇H_θ · J∇H_θ = 0`` for any weights, and ``∂q̇/∂q = ∂²H/∂q∂p = 0``
    exactly. Scales as the HNN's (:meth:`HamiltonianNN.set_scales`).
    """

    kind: ClassVar[str] = "ode"
    coords: ClassVar[str] = "canonical"
    default_activation: ClassVar[str] = "tanh"
    capabilities: ClassVar[frozenset[str]] = frozenset({"learned_energy", "conserves_learned_energy",
                                                        "gradient_form"})

    def __init__(self, dof: int, hidden: int, layers: int, activation: str):
        super().__init__()
        self.dof = dof
        self.kinetic = models.mlp.make_mlp(dof, 1, hidden, layers, activation, out_bias=False)
        self.potential = models.mlp.make_mlp(dof, 1, hidden, layers, activation, out_bias=False)
        self.register_buffer("x_mean", torch.zeros(2 * dof))
        self.register_buffer("x_std", torch.ones(2 * dof))
        self.register_buffer("h_scale", torch.ones(()))

    @classmethod
    def from_spec(cls, spec: models.Spec, **options) -> SeparableHNN:
        return cls(spec.even_state() // 2, hidden=spec.width, layers=spec.depth, activation=spec.activation)

    @torch.no_grad()
    def set_scales(self, x: torch.Tensor, y: torch.Tensor) -> None:
        models.mlp.check_pair(x, y, 2 * self.dof, 2 * self.dof)
        sx, sy = models.mlp.spread(x), models.mlp.spread(y)
        conjugate = torch.cat([sx[self.dof:], sx[: self.dof]])  # σ of the partner coordinate
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(sx)
        self.h_scale.copy_(torch.log(sy * conjugate).mean().exp())

    def hamiltonian(self, z: torch.Tensor) -> torch.Tensor:
        """``H_θ(z)``: ``(B, 2·dof) -> (B,)``."""
        zn = (z - self.x_mean) / self.x_std
        return self.h_scale * (self.kinetic(zn[..., self.dof:]) + self.potential(zn[..., : self.dof])).squeeze(-1)

    @property
    def gradient_form(self) -> integrators.GradientForm:
        return integrators.GradientForm(self.hamiltonian)

    @models.mlp.escape_inference_mode
    def learned_energy(self, z: torch.Tensor) -> torch.Tensor:
        return self.hamiltonian(z)

    @models.mlp.escape_inference_mode
    def forward(self, z: torch.Tensor, t=None) -> torch.Tensor:
        return models.hamiltonian_vector_field(self.hamiltonian, z)


#: the baseline under another key: same architecture, no constraint, no style of its own
COPY = dataclasses.replace(methods.get_method("baseline"), key="baseline_copy", title="Baseline, copied in a test")
#: a method that trains the separable HNN (on the two one-degree-of-freedom systems, to keep the run short)
SEPARABLE = methods.Method(
    "sephnn", "Separable HNN (test)", "hard", "sephnn", None, None,
    r"H_\theta = T_\theta(p) + V_\theta(q),\quad \dot z = J\nabla H_\theta",
    "An HNN whose energy is a kinetic part in the momenta plus a potential part in the positions.",
    systems=("oscillator", "pendulum"),
)


class L1Penalty(constraints.Constraint):
    """``loss += w · Σ_Q mean|c|``: a penalty that pulls small violations to exactly zero
    harder than the squared one, with its own weight ``l1_weight``."""

    kind = "l1"
    settings = {"l1_weight": param.Number(default=1.0, bounds=(0.0, 100.0), softbounds=(0.0, 5.0), step=0.05,
                                          label="L1 weight w (L1 penalty)", doc="Weight of the L1 penalty.")}

    def __init__(self, l1_weight: float):
        self.weight = float(l1_weight)

    def loss(self, res, idx=None):
        return self.weight * sum(c.abs().mean() for c in res.values())


#: the penalty method's architectures with the L1 constraint
L1_METHOD = dataclasses.replace(methods.get_method("penalty"), key="l1_penalty", title="L1 penalty (test)",
                                constraint="l1", reads=("l1_weight",))


def register_all() -> None:
    """What ``conftest.py`` calls when ``CONSERV_TEST_REGISTER`` names this file."""
    methods.register(COPY)
    systems.register(Oscillator)
    models.register("sephnn", SeparableHNN)
    methods.register(SEPARABLE)
    constraints.register(L1Penalty)  # on the oscillator the generic tests train it too
    methods.register(L1_METHOD)


@pytest.fixture
def added():
    with methods.registered(COPY), systems.registered(Oscillator), models.registered("sephnn", SeparableHNN), \
            methods.registered(SEPARABLE):
        yield


def test_the_oscillator_is_a_true_system():
    """The test system itself is right: its exact solution is the flow of its field and
    keeps its energy (else the checks below would prove nothing)."""
    osc = Oscillator()
    z0 = osc.sample_initial(8, seed=1)
    t = torch.linspace(0, 3, 31, dtype=torch.float64)
    from conserv_core import integrators

    rk4 = integrators.solve(osc.vector_field, z0, t, method="rk4", max_dt=1e-3)
    assert torch.allclose(rk4, osc.exact(z0, t), atol=1e-10)
    e = osc.energy(osc.exact(z0, t).reshape(-1, 2)).reshape(31, 8)
    assert torch.allclose(e, e[:1].expand_as(e), rtol=1e-12)


@pytest.mark.slow
def test_generic_tests_collect_and_pass_for_the_added_method_and_system():
    env = dict(os.environ, CONSERV_TEST_REGISTER=str(Path(__file__).resolve()))
    files = ["tests/test_systems.py", "tests/test_geometric.py", "tests/test_models.py", "tests/test_training.py",
             "tests/test_app.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files,
                           "-k", "oscillator or baseline_copy or sephnn"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    # every generic system test (about 20), the pairs of the copy with every system, and
    # the oscillator with every method that applies: far more than a handful
    assert passed >= 60, tail
    assert "skipped" not in summary and "deselected" in summary, tail


def test_conserv_methods_and_systems_list_them(added):
    out = io.StringIO()
    assert cli.main(["methods"], out=out) == 0
    line = next(x for x in out.getvalue().splitlines() if x.startswith("baseline_copy"))
    assert "oscillator" in line and "pendulum" in line
    hnn = next(x for x in out.getvalue().splitlines() if x.startswith("hnn "))
    assert "oscillator" in hnn
    out = io.StringIO()
    assert cli.main(["systems"], out=out) == 0
    assert "oscillator" in out.getvalue() and "omega" in out.getvalue()
    assert cli.main(["methods"], out=io.StringIO()) == 0


PLUGIN = Path(__file__).with_name("oscillator_plugin.py")


@pytest.mark.slow
def test_a_plugin_file_adds_them_to_the_cli():
    """``conserv --plugin FILE`` (before or after the command) and ``CONSERV_PLUGINS`` load
    a user's file before anything else; a broken one is refused in one line."""
    env = dict(os.environ)
    env.pop("CONSERV_PLUGINS", None)
    run = lambda *argv, **kw: subprocess.run([sys.executable, "-m", "conserv_core", *argv], cwd=ROOT,  # noqa: E731
                                             capture_output=True, text=True, timeout=300, env={**env, **kw})
    proc = run("methods", "--plugin", str(PLUGIN))
    assert proc.returncode == 0 and "baseline_copy" in proc.stdout and "oscillator" in proc.stdout, proc.stderr
    proc = run("--plugin=" + str(PLUGIN), "run", "--system", "oscillator", "--method", "baseline_copy",
               "--steps", "20", "--width", "8", "--horizon", "1", "--quiet")
    assert proc.returncode == 0 and "baseline_copy" in proc.stdout, proc.stderr
    proc = run("--plugin", str(PLUGIN), "run", "--system", "oscillator", "--method", "sephnn",
               "--steps", "20", "--width", "8", "--horizon", "1", "--quiet")
    assert proc.returncode == 0 and "sephnn" in proc.stdout, proc.stderr
    assert run("systems", CONSERV_PLUGINS=str(PLUGIN)).stdout.count("omega") == 1
    bad = run("methods", "--plugin", "no_such_module_here")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "plugin 'no_such_module_here' could not be loaded" in bad.stderr, bad.stderr


def test_a_plugin_trains_on_a_cluster_of_separate_processes(cluster):
    """Served on a cluster, the server passes its plugins to every worker: a run of the
    added methods (the copy, the separable HNN's, the L1 penalty's with its own setting)
    on the added system, on scheduler and workers started as their own processes, ends
    like the same run in process, bit for bit."""
    from conserv_core import runs

    cfg = dict(steps=12, width=8, eval_every=6, n_test=3, horizon=1.0, device="cpu", l1_weight=2.0)
    spec = runs.RunSpec("oscillator", {"omega": 2.0}, ("baseline_copy", "hnn", "sephnn", "l1_penalty"), cfg)
    # the server's side knows them
    with methods.registered(COPY), systems.registered(Oscillator), models.registered("sephnn", SeparableHNN), \
            methods.registered(SEPARABLE), constraints.registered(L1Penalty), methods.registered(L1_METHOD):
        lone = runs.InProcessExecutor(threads=1).submit(spec)
        assert lone.finished.wait(120)
        ex = runs.DaskExecutor.connect(cluster, plugins=[str(PLUGIN)])
        try:
            h = ex.submit(spec)
            assert h.finished.wait(180)
        finally:
            ex.close()
    assert h.where.startswith("tcp://")
    failed = [r for r in h.queue if isinstance(r, runs.Failed)]
    assert not failed, failed

    def numbers(handle):
        return [(r.method, r.step, r.test_mse, tuple(r.drift["energy"].rel)) for r in handle.queue
                if isinstance(r, training.Evaluation) and r.method != "truth"]

    assert numbers(h) == numbers(lone) and len(numbers(h)) == 12


def test_the_separable_hnn_keeps_its_own_energy_on_untrained_weights():
    """``dH_θ/dt = ∇H_θᵀ J ∇H_θ = 0`` to round-off at random states 10× out of any
    training band, and ``∂q̇/∂q = 0`` (separable), for weights straight from the draw.
    Built by ``models.build`` and by the method, through the class's own ``from_spec``."""
    with models.registered("sephnn", SeparableHNN), methods.registered(SEPARABLE):
        model = models.build("sephnn", dof=2, width=16, generator=torch.Generator().manual_seed(0)).double()
        assert isinstance(model, SeparableHNN) and model.dof == 2
        assert methods.get_method("sephnn").has_learned_energy(Oscillator())
        assert methods.get_method("sephnn").has_gradient_form(Oscillator())
        built = methods.get_method("sephnn").build_model(Oscillator(), training.make_config("oscillator", width=8))
        assert isinstance(built, SeparableHNN) and built.dof == 1
    z = 10 * torch.randn(256, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z.requires_grad_(True)
    f = model(z)
    (g,) = torch.autograd.grad(model.learned_energy(z).sum(), z)
    rate = (g * f.detach()).sum(-1).abs() / (g.norm(dim=-1) * f.detach().norm(dim=-1))
    assert rate.max() <= 1e-12, f"max |dH/dt| rel {rate.max():.2e}"
    (dqdot_dq,) = torch.autograd.grad(f[:, :2].sum(), z)
    assert dqdot_dq[:, :2].abs().max() == 0.0


def test_the_separable_hnn_trains_through_the_training_api(added):
    """A short run of the added method on the added system: the loss falls, and the
    evaluation carries the learned energy's drift (it declares ``learned_energy``)."""
    cfg = training.make_config("oscillator", steps=60, width=16, eval_every=60, n_test=3, horizon=1.0)
    run = training.Trainer(Oscillator(), "sephnn", cfg).run()
    assert isinstance(run.model, SeparableHNN)
    losses = [p.loss for p in run.history]
    assert losses[-1] < 0.5 * losses[0], losses[:: 10]
    assert run.last_eval.learned_drift and math.isfinite(run.last_eval.test_mse)


def test_they_leave_the_registries_when_the_block_ends():
    with methods.registered(COPY), systems.registered(Oscillator), models.registered("sephnn", SeparableHNN):
        assert "baseline_copy" in methods.ALL_METHODS and "oscillator" in systems.ALL_SYSTEMS
        assert models.ARCHITECTURES["sephnn"] is SeparableHNN
        with pytest.raises(ValueError, match="'sephnn' is already registered"):
            models.register("sephnn", SeparableHNN)
    assert "baseline_copy" not in methods.ALL_METHODS and "oscillator" not in systems.ALL_SYSTEMS
    assert "sephnn" not in models.ARCHITECTURES
    with pytest.raises(TypeError, match="subclass of models.Model"):
        models.register("sephnn", Oscillator)
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get_method("hnn"))
    with pytest.raises(ValueError, match="architecture 'nope'"):
        methods.register(dataclasses.replace(COPY, arch_ode="nope"))


def test_a_method_without_a_style_gets_one_of_its_own(added):
    s = theme.style("baseline_copy")
    assert s.color not in {theme.STYLES[k].color for k in theme.STYLES}
    assert s.short == "baseline_copy (no constraint)"
    assert theme.COLORS["baseline_copy"] == s.color and theme.SHORT["baseline_copy"] == s.short
    assert theme.COLORS["never_registered"] == "#888888"


def test_the_copy_trains_bit_identically_to_the_baseline(added):
    """Behaviour comes from the method record, not its key: the copy is the baseline."""
    osc = Oscillator()
    cfg = dict(steps=5, width=16, eval_every=5, n_test=3, horizon=1.0)
    a = training.Trainer(osc, "baseline", training.make_config("oscillator", **cfg)).run()
    b = training.Trainer(osc, "baseline_copy", training.make_config("oscillator", **cfg)).run()
    assert [p.loss for p in a.history] == [p.loss for p in b.history]
    assert a.last_eval.drift["energy"].rel == b.last_eval.drift["energy"].rel


def _drain_until(dash, cond, timeout=120.0):
    import time

    t0 = time.perf_counter()
    while not cond():
        dash.drain()
        assert time.perf_counter() - t0 < timeout, dash.session.status
        time.sleep(0.02)
    dash.drain()


@pytest.mark.slow
def test_a_headless_dashboard_trains_them_and_draws_every_view(added):
    from bokeh.models import ColumnDataSource

    dash = app.Dashboard(autodrain=False)
    try:
        dash.controls.system.value = "oscillator"
        s = dash.session
        assert "baseline_copy" in s.valid_methods()
        wanted = ["baseline_copy", "hnn", "auglag"]
        dash.controls.methods.value = wanted
        assert s.methods == [m for m in methods.ALL_METHODS if m in wanted]  # the registry's order
        w = dash.controls.config_widgets
        w["steps"].value, w["width"].value, w["horizon"].value = 12, 8, 2.0
        s.evals_per_run = 2
        root = pn.panel(dash).get_root()
        dash.controls.train_button.clicks += 1
        _drain_until(dash, lambda: not s.running)
        assert s.status_kind == "success", s.status
        assert not s.errors, s.errors
        assert set(s.data.latest_eval) == set(wanted)
        assert theme.SHORT["baseline_copy"] in s.status  # the verdict names it

        def lengths(column):
            return [len(m.data[column]) for m in root.select({"type": ColumnDataSource}) if column in m.data]

        assert max(lengths("loss")) > 0 and max(lengths("violation")) > 0
        assert max(lengths("drift")) > 0
        assert max(lengths("value")) > 0  # the augmented Lagrangian's multipliers
        # the system view: a phase portrait (the family the oscillator inherits), with the
        # HNN's energy contours, not the placeholder
        assert isinstance(dash.system_view._box.objects[0], pn.Column)
        assert "hnn:levels" in s.streams.views.data or any("hnn" in k for k in s.data.latest_eval)
        # the teaching cards: the system's and one per method, in the methods' colours
        cards = [c for c in dash.teaching_view._box.objects if isinstance(c, pn.Card)]
        titles = [c.title for c in cards]
        assert "System: Harmonic oscillator (test)" in titles and COPY.title in titles
        copy_card = cards[titles.index(COPY.title)]
        assert copy_card.header_background == theme.COLORS["baseline_copy"]
        for view in (dash.controls, dash.status_view, dash.drift_view, dash.loss_view, dash.system_view,
                     dash.multiplier_view, dash.teaching_view):
            assert pn.panel(view).get_root() is not None
        # the downloads carry them too
        assert "baseline_copy" in set(app.export.curves_frame(s.data)["method"])
    finally:
        dash.close()


@pytest.fixture
def l1_added():
    with constraints.registered(L1Penalty), methods.registered(L1_METHOD):
        yield


def test_the_l1_constraint_trains_with_its_own_setting(l1_added):
    """Built from the config by the base class: its weight is the config's, and it changes
    the training (a weight of zero leaves the data loss alone)."""
    sysm = systems.get_system("pendulum")
    cfg = dict(steps=4, width=8, eval_every=4, n_test=2, horizon=1.0, device="cpu")
    built = L1_METHOD.build_constraint(training.make_config("pendulum", l1_weight=2.5, **cfg))
    assert isinstance(built, L1Penalty) and built.weight == 2.5
    runs = {w: training.Trainer(sysm, "l1_penalty", training.make_config("pendulum", l1_weight=w, **cfg)).run()
            for w in (0.0, 5.0)}
    assert all(r.status == "done" for r in runs.values()), {w: r.status for w, r in runs.items()}
    assert [p.loss for p in runs[0.0].history] != [p.loss for p in runs[5.0].history]
    assert methods.unread_fields("penalty") >= {"l1_weight"} and "l1_weight" not in methods.unread_fields("l1_penalty")
    with pytest.raises(Exception, match="l1_weight"):
        training.make_config("pendulum", l1_weight=1e9)  # the declared bounds hold


def test_the_cli_takes_the_l1_setting(l1_added, tmp_path):
    out, path = io.StringIO(), tmp_path / "l1.json"
    argv = ["run", "--system", "pendulum", "--method", "l1_penalty", "--l1-weight", "0.75", "--steps", "3",
            "--width", "8", "--n-test", "2", "--horizon", "1", "--device", "cpu", "--quiet", "--json", str(path)]
    assert cli.main(argv, out=out) == 0, out.getvalue()
    import json

    assert json.loads(path.read_text())["config"]["l1_weight"] == 0.75
    bad = argv[:argv.index("--l1-weight") + 1] + ["1e9"] + argv[argv.index("--l1-weight") + 2:]
    assert cli.main(bad, out=io.StringIO()) == 2  # refused by the declared bounds, before training


def test_a_link_carries_the_l1_setting(l1_added):
    s = app.LabSession()
    try:
        assert s.apply_link([("system", "pendulum"), ("methods", "baseline,l1_penalty"), ("l1_weight", "0.25")]) == []
        assert s.config.l1_weight == 0.25 and "l1_penalty" in s.methods
        assert "l1_weight=0.25" in s.query_string()
        refused = s.apply_link([("l1_weight", "1000")])
        assert len(refused) == 1 and "l1_weight" in refused[0] and "100" in refused[0], refused
        assert s.config.l1_weight == 0.25
    finally:
        s.close()


def test_a_headless_dashboard_shows_a_control_for_the_l1_setting(l1_added):
    """The "Constraint settings" card lists the new setting, labelled and ranged as
    declared above, beside the built-in constraints' ones; the control drives the run's
    config and the link."""
    dash = app.Dashboard(autodrain=False)
    try:
        c = dash.controls
        assert c.constraint_fields[:4] == ["lam", "mu", "mu_growth", "update_every"]
        assert "l1_weight" in c.constraint_fields and "mu_max" not in c.constraint_fields
        w = c.config_widgets["l1_weight"]
        card = next(k for k in c._cards if k.title == "Constraint settings")
        assert any(o is w for o in card.objects)
        assert (w.label, w.start, w.end, w.step) == ("L1 weight w (L1 penalty)", 0.0, 5.0, 0.05)
        assert c.hideable()["l1_weight"] == "L1 weight w (L1 penalty)"  # a lesson may hide it
        w.value = 3.5
        assert dash.session.config.l1_weight == 3.5
        assert "l1_weight=3.5" in dash.session.query_string()
        assert pn.panel(c).get_root() is not None
    finally:
        dash.close()


def test_the_l1_setting_leaves_with_the_block():
    with constraints.registered(L1Penalty):
        assert "l1_weight" in training.TrainConfig.param and "l1_weight" in settings.url_config_fields()
        with pytest.raises(ValueError, match="already registered"):
            constraints.register(L1Penalty)
    assert "l1" not in constraints.CONSTRAINTS and "l1_weight" not in training.TrainConfig.param
    assert "l1_weight" not in settings.url_config_fields() and "l1_weight" not in settings.config_fields()
    with pytest.raises(TypeError):
        training.TrainConfig(l1_weight=1.0)
    with pytest.raises(ValueError, match="constraint 'l1' is not in"):  # a method needs its constraint registered
        methods.register(L1_METHOD)
    with constraints.registered(L1Penalty), pytest.raises(ValueError, match="reads l1_weight"):
        methods.register(dataclasses.replace(L1_METHOD, reads=()))  # sweeps would merge its l1_weight cells
    with pytest.raises(TypeError, match="Constraint subclass"):
        constraints.register(dict)
    taken = type("Taken", (L1Penalty,), {"kind": "taken", "settings": {"lr": param.Number(1.0)}})
    with pytest.raises(ValueError, match="'lr' is already a TrainConfig field"):
        constraints.register(taken)
    assert "taken" not in constraints.CONSTRAINTS


@pytest.mark.slow
def test_the_architecture_examples_are_one_plugin_that_trains(tmp_path):
    """docs/ARCHITECTURE.md's examples (a system, an architecture, a soft constraint with
    its own setting, two methods), put in one file as the page says, are a plugin the CLI
    trains; its constraint's setting is a flag. The map cannot drift from the code."""
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page[page.index("## The examples"):], flags=re.S)
    assert len(blocks) == 4, "one block per addition: system, architecture, constraint, methods"
    plugin = tmp_path / "my_parts.py"
    plugin.write_text("\n\n".join(blocks))
    proc = subprocess.run([sys.executable, "-m", "conserv_core", "--plugin", str(plugin), "compare",
                           "--system", "stiff_spring", "--methods", "baseline,sep_hnn,l1", "--steps", "40",
                           "--width", "8", "--horizon", "2", "--l1-weight", "2", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line.split()}
    assert rows.get("sep_hnn") == "done" and rows.get("l1") == "done", proc.stdout
