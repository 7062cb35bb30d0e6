"""A work budget, checked before a run builds anything.

Every knob of a run is bounded on its own, but their product is not: ``horizon=1e5`` with
``dt=1e-5`` is ten billion rollout steps, each knob within its range. A shared server
must refuse such a run at once, with a message that says which settings to change,
rather than start a loop that holds a core for hours. :func:`check` estimates a run's
work from the system and the :class:`~conserv_core.training.TrainConfig` alone (no
data, no solve) and raises :class:`ParameterError` above the limit.

Work is counted in *state-steps*: one state advanced by one integrator step, or one
parcel carried one step; a training sample through one optimisation step and a flow
solver step are converted to state-steps by their measured cost
(:data:`TRAIN_SAMPLE_COST`, :data:`SOLVER_CELL_COST`). A batch
smaller than :data:`MIN_BATCH` is counted as :data:`MIN_BATCH`: below that, torch's
per-call overhead, not the batch, sets a step's cost (a pendulum RK4 step of 32 states
takes ~0.1-0.2 ms on one core, one of 1 000 states ~0.3 ms). The unit is priced at a
learned model's rollout, the bulk of most runs: an RK4 step of 32 states of the default
pendulum MLP (width 64) takes 0.4-0.6 ms on one core, so a million state-steps are
roughly 15-20 seconds of one core (``benchmarks/bench_budget.py``).

Not every state costs a unit. Each model prices its own states
(:meth:`conserv_core.models.Model.cost_per_state`, asked through
:meth:`conserv_core.methods.Method.cost_per_state`; the true field through
:meth:`~conserv_core.systems.base.System.cost_per_state`), because only the model knows
what its work grows with: the symmetric HNN sums a network over the N(N − 1)/2 body
pairs and backpropagates through that sum again in training, so a 64-body run (2 016
pairs) costs ~1 400 units a rollout state and ~7 700 a training sample, and was once
priced like two bodies. The prices, measured by ``benchmarks/bench_budget.py`` on one
core, ratio to the unit timed beside each row (n-body, width 128; two runs, noisy on a
shared machine)::

    model     N=2 roll/train   N=8 roll/train   N=16 roll/train   grows with
    truth     0.8-1.1  -        1.2-1.5  -        1.5-1.6  -          pairs (mildly)
    baseline  1.2-2.5  1.6-1.9  1.3      1.7      1.3-1.4  1.9-2.0    state_dim
    hnn       2.0-4.6  2.3-2.8  2.0-2.7  2.7-3.3  2.1-2.2  3.3        state_dim
    phnn      4.1-5.2  3.1-3.6  6.0-8.0  5.9-7.5  8.3-9.3  13-14      state_dim²
    lnn       16-17    23-34    21-26    74-96    47-58    204-281    dof²
    shnn      7.4-8.5  2.6-3.7  25       76-88    86-96    398-536    pairs

The fits each model declares follow these within the noise (the benchmark prints them
beside the measurements as ``pred``).

The limit is :data:`DEFAULT_MAX_WORK`, or the environment variable ``CONSERV_MAX_WORK``
(a server sets it for every session it starts), or the ``max_work`` argument.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from conserv_core import methods
from conserv_core.systems.base import ODESystem, ParameterError, System

#: batches below this size cost a step as much as this many states (torch overhead)
MIN_BATCH = 32
#: the environment variable that overrides :data:`DEFAULT_MAX_WORK`
ENV_VAR = "CONSERV_MAX_WORK"
#: The default limit, ~45-65 minutes of one core at the measured unit: it refuses what
#: would hold a worker for an hour. Measured with :func:`estimate` at the models' own
#: prices: every system's recommended config with the methods its page ticks needs at
#: most 4.0e6 state-steps (n-body), every preset at most 7.3e6 (``wrong-symmetry``, three
#: n-body models); the most a default config can ask, all seven n-body methods side by
#: side, is 2.6e7 (several minutes of a core: the LNN's Hessians and the symmetric HNN's
#: pairs are really that dear), ~8x under. A pendulum at horizon=1e5 and its default dt
#: (3.8e8: a million RK4 steps per rollout, minutes for the truth alone) is refused, as is
#: anything at dt=1e-5 over a long horizon, and a symmetric HNN on 64 bodies (2.6e9).
DEFAULT_MAX_WORK = 2e8
#: one training sample through one optimisation step, in state-steps: a 512-batch step
#: (forward and backward) of the default pendulum/n-body models costs 4-8 ms on one core,
#: an RK4 rollout step of 32 states (four forward passes) of the same model 1-3 ms, so a
#: sample costs an eighth to a quarter of a state-step; a quarter errs towards refusing
TRAIN_SAMPLE_COST = 0.25
#: the flow solver's cost per step and grid cell, in state-steps: an IF-RK4 step takes
#: 0.2-0.4 µs per cell on one core (0.9 ms at 64², 24 ms at 256²), against 30-90 µs for
#: a state-step of a model's rollout
SOLVER_CELL_COST = 1.0 / 128.0
#: an upper estimate of max(|u| + |v|) of the flow's initial field, which sets the CFL
#: step (measured 3.6 for the default random field; Taylor-Green's is exactly 1)
FLOW_SPEED = {"random": 4.0, "taylor_green": 1.0}


@dataclass(frozen=True)
class Term:
    """One part of a run's work.

    Attributes:
        what: what the work is, e.g. ``"rollouts"``.
        work: state-steps.
        detail: the product that gives ``work``, naming the settings, for the message.
        fix: which settings lower it.
    """

    what: str
    work: float
    detail: str
    fix: str


def max_work(limit: float | None = None) -> float:
    """The limit in force: ``limit`` if given, else ``$CONSERV_MAX_WORK``, else
    :data:`DEFAULT_MAX_WORK`.

    Raises:
        ParameterError: the limit (argument or variable) is not a positive number.
    """
    if limit is None:
        text = os.environ.get(ENV_VAR, "").strip()
        if not text:
            return DEFAULT_MAX_WORK
        try:
            limit = float(text)
        except ValueError:
            raise ParameterError(f"{ENV_VAR} must be a positive number of state-steps, e.g. 2e8; "
                                 f"got {text!r}") from None
        source = ENV_VAR
    else:
        source = "max_work"
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit <= 0:
        raise ParameterError(f"{source} must be a positive finite number of state-steps, e.g. 2e8; got {limit!r}")
    return float(limit)


def _n_evaluations(config) -> int:
    """Evaluations one trainer makes: one at the start, one every ``eval_every`` steps,
    one at the end (see ``Trainer._advance``)."""
    every = config.eval_every or max(1, config.steps // 10)
    return 1 + config.steps // every + (1 if config.steps % every else 0)


def _batch(n: int) -> int:
    return max(n, MIN_BATCH)


#: a discrete-gradient step costs about as much as this many RK4 steps (fixed-point
#: iterations, benchmarks/bench_geometric.py), and its HNN evaluations add an RK4 twin
DG_STEP_COST = 3.0
#: the Leray projection samples the learned field on the solver's grid this many times per
#: parcel step (RK4 stage times, cached; benchmarks/bench_leray.py)
LERAY_SAMPLES_PER_STEP = 2.3


def _rollout_factor(config) -> float:
    """The cost of one model rollout relative to a plain one, under the rollout options:
    projection adds its Newton solve and an unprojected twin (x3), the discrete gradient
    its iterations and an RK4 twin for the learned energy."""
    f = 1.0
    if getattr(config, "integrator", "rk4") == "discrete_gradient":
        f = DG_STEP_COST + 1.0
    if getattr(config, "projection", False):
        f *= 3.0
    return f


def _num(x: float) -> str:
    """A price for a message: three figures, whole numbers with thousands separated."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _dearest(key: str, price: float, costs: dict) -> str:
    """The dearest method's price and what sets it, for a term's detail ("" when every
    model is priced at the unit and says nothing)."""
    why = costs[key].why
    return f" (dearest {key}: {_num(price)} units, {why})" if why else ""


def _lower(cost) -> str:
    """The setting that lowers a model's price, added to a term's fix."""
    return f", or lower {cost.lower} ({cost.why})" if cost.lower else ""


def estimate(system: System, method_keys: list[str] | tuple[str, ...], config) -> list[Term]:
    """The work of training ``method_keys`` side by side (as
    :class:`~conserv_core.training.Comparison` does) on ``system`` with ``config``,
    largest part first. Reads parameters only: nothing is built or solved.
    """
    keys = list(dict.fromkeys(method_keys)) or [next(k for k, m in methods.ALL_METHODS.items() if m.is_reference)]
    n_methods = len(keys)
    # what a state costs each method's model on this system, and the dearest, which the
    # message names with what sets its price (the symmetric HNN: the body pairs)
    costs = {k: methods.get_method(k).cost_per_state(system) for k in keys}
    dear_roll = max(keys, key=lambda k: costs[k].rollout)
    dear_train = max(keys, key=lambda k: costs[k].train)
    n_constrained = sum(methods.get_method(k).constraint is not None for k in keys)  # a soft constraint's work
    n_evals = _n_evaluations(config)
    # every evaluation of every method, and the truth once
    rollouts = n_methods * n_evals * _rollout_factor(config) + 1
    dt = config.dt if config.dt is not None else system.dt
    horizon = config.horizon if config.horizon is not None else system.horizon
    terms = []
    if system.kind == "field":
        n_train = max(1, int(0.8 * system.n_samples))
        carry_steps = max(1, math.ceil(horizon / dt - 1e-9))
        parcels = system.n_parcels
        terms.append(Term(
            "dye rollouts", carry_steps * _batch(parcels) * rollouts,
            f"horizon={horizon:g} / dt={dt:g} = {carry_steps:,} steps × {parcels:,} parcels × {rollouts:g} rollouts",
            "lower horizon or n_parcels, or raise dt or eval_every"))
        if getattr(config, "projection", False):
            samples = carry_steps * LERAY_SAMPLES_PER_STEP * system.grid ** 2 * n_methods * n_evals
            terms.append(Term(
                "Leray projection", samples,
                f"{carry_steps:,} steps × {LERAY_SAMPLES_PER_STEP:g} samples of grid={system.grid}² × "
                f"{n_methods * n_evals} rollouts", "lower the flow's grid or horizon, or raise eval_every"))
        # the truth: IF-RK4 steps of the CFL size towards every snapshot of [0, t_span]
        dt_cfl = 0.5 * (2 * math.pi / system.grid) / FLOW_SPEED.get(system.initial, 4.0)
        n_intervals = max(1, round(system.t_span / system.snapshot_dt))
        solver_steps = n_intervals * max(1, math.ceil(system.snapshot_dt / dt_cfl))
        terms.append(Term(
            "flow solver", solver_steps * system.grid ** 2 * SOLVER_CELL_COST,
            f"~{solver_steps:,} solver steps to t={system.t_span:g} × grid={system.grid}² / 128",
            "lower the flow's grid, t_end, n_snapshots or horizon"))
        terms.append(Term("training data", float(system.n_samples), f"n_samples={system.n_samples:,}",
                          "lower the flow's n_samples"))
    else:
        n_traj, n_points = system.n_traj, system.n_points
        n_train = max(1, int(0.8 * n_traj * n_points))
        eval_steps = max(1, int(round(horizon / dt)))
        cases = 2 * config.n_test
        # every method's rollouts at its model's price, and the truth's once at the field's
        priced = n_evals * _rollout_factor(config) * sum(c.rollout for c in costs.values()) + system.cost_per_state()
        terms.append(Term(
            "rollouts", float(eval_steps) * _batch(cases) * priced,
            f"horizon={horizon:g} / dt={dt:g} = {eval_steps:,} steps × {cases} test cases × {rollouts:g} rollouts"
            f" × {_num(priced / rollouts)} units a state{_dearest(dear_roll, costs[dear_roll].rollout, costs)}",
            "lower horizon or n_test, or raise dt or eval_every" + _lower(costs[dear_roll])))
        if isinstance(system, ODESystem) and type(system).reference_rollout is ODESystem.reference_rollout:
            # RK4 at reference_dt between every pair of sample times (integrators.solve)
            gap = system.t_span / (n_points - 1)
            ref_steps = (n_points - 1) * max(1, math.ceil(gap / type(system).reference_dt - 1e-9))
            detail = f"t_span={system.t_span:g} / {type(system).reference_dt:g} = {ref_steps:,} steps × n_traj={n_traj:,}"
        else:  # a closed-form reference: one evaluation per sample
            ref_steps = n_points
            detail = f"n_points={n_points:,} × n_traj={n_traj:,}"
        truth = system.cost_per_state()
        if truth != 1.0:
            detail += f" × {_num(truth)} units a state"
        terms.append(Term("training data", float(ref_steps) * _batch(n_traj) * truth, detail,
                          "lower the system's n_traj, t_span or n_points"))
    batch = min(config.batch_size, n_train)
    # a soft constraint's collocation points go through the same model: its price too
    samples = sum((_batch(batch) + (_batch(config.n_colloc) if methods.get_method(k).constraint is not None else 0))
                  * costs[k].train for k in keys)
    plain = n_methods * _batch(batch) + n_constrained * _batch(config.n_colloc)
    train = config.steps * samples * TRAIN_SAMPLE_COST
    detail = f"steps={config.steps:,} × ({n_methods} method(s) × batch {batch:,}"
    detail += f" + {n_constrained} constrained × n_colloc={config.n_colloc:,})" if n_constrained else ")"
    detail += f" × {TRAIN_SAMPLE_COST:g} × {_num(samples / plain)} units a sample"
    detail += _dearest(dear_train, costs[dear_train].train, costs)
    terms.append(Term("training", float(train), detail, "lower steps, batch_size or n_colloc" + _lower(costs[dear_train])))
    return sorted(terms, key=lambda t: -t.work)


def check(system: System, method_keys: list[str] | tuple[str, ...], config, limit: float | None = None) -> float:
    """Refuse a run whose estimated work is above the limit, before anything is built.

    Args:
        system: the built system (its parameters only are read).
        method_keys: the methods that will train side by side.
        config: the run's :class:`~conserv_core.training.TrainConfig`.
        limit: the limit in state-steps (default: :func:`max_work`).

    Returns:
        The estimated work in state-steps.

    Raises:
        ParameterError: over the limit; one line naming the largest part of the work, the
            settings behind it, the limit and how to lower one or raise the other.
    """
    cap = max_work(limit)
    terms = estimate(system, method_keys, config)
    total = sum(t.work for t in terms)
    if total > cap:
        top = terms[0]
        raise ParameterError(
            f"this run needs {total:.1e} state-steps, most of them {top.what} ({top.detail}); "
            f"the limit is {cap:.1e}: {top.fix}, or raise the limit "
            f"(max_work, the environment variable {ENV_VAR}, or --max-work)")
    return total


__all__ = ["DEFAULT_MAX_WORK", "ENV_VAR", "MIN_BATCH", "Term", "check", "estimate", "max_work"]
