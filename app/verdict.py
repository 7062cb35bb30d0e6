"""The sentence a finished run ends with: each method's largest drift over the rollout
(with its value at the horizon beside it), and what it means against the baseline and
the truth. Methods are ranked by the largest value: a curve that crosses zero at the
horizon would rank by luck."""

from __future__ import annotations

import math

from conserv_core import methods

from app import theme


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "NaN"
    return "0 (exact)" if x == 0 else f"{x:.1e}"


def _final(curve) -> float:
    """The drift at the horizon (NaN if the rollout blew up before it)."""
    return float(curve.final)


def _peak(curve) -> str:
    """A curve as the sentence gives it: its largest value, and its value at the end."""
    top, end = curve.largest, _final(curve)
    if top == 0 or not math.isfinite(top) or _fmt(top) == _fmt(end):
        return _fmt(top)
    return f"{_fmt(top)} (end {_fmt(end)})"


def verdict(data) -> str:
    """Each method's largest drift over the rollout (its value at the end beside it), and
    how the best compares with the baseline, by the largest value."""
    q = data.invariants[0]
    if not data.system.is_conserved(q):
        return _not_conserved(data, q) + _rollout_options(data)
    title = theme.INVARIANTS.get(q, (q, ""))[0].lower()
    curves = {m: data.latest_eval[m].drift[q] for m in data.methods
              if m in data.latest_eval and q in data.latest_eval[m].drift}
    finals = {m: float(c.largest) for m, c in curves.items()}
    parts = [f"{theme.SHORT[m]} {_peak(c)}" for m, c in curves.items()]
    if data.truth is not None and q in data.truth.drift:
        parts.append(f"truth {_peak(data.truth.drift[q])}")
    secs = max((p.elapsed for p in data.progress.values()), default=0.0)
    horizon = data.truth.drift[q].t[-1] if data.truth is not None and q in data.truth.drift else None
    at = f" up to t = {horizon:g}" if horizon is not None else ""
    text = (f"Done ({secs:.0f} s of training per method). Largest {title}{at}: "
            + " · ".join(parts) + ".")
    # the reference: the first unconstrained method in the run (the baseline)
    ref = next((m for m in finals if methods.get_method(m).is_reference), None)
    base = finals.get(ref) if ref is not None else None
    others = {m: v for m, v in finals.items() if m != ref and math.isfinite(v)}
    if base is not None and math.isfinite(base) and base > 0 and others and not data.config.projection:
        best = min(others, key=others.get)
        ref_name = theme.SHORT[ref].split(" (")[0]  # "baseline"
        ratio = base / others[best] if others[best] > 0 else math.inf
        if ratio == math.inf:
            text += f" {theme.SHORT[best]} keeps it exactly; the {ref_name} does not."
        elif ratio >= 2:
            text += f" {theme.SHORT[best]} drifts {ratio:,.0f}× less than the {ref_name}."
        else:
            text += (f" No method beats the {ref_name} by much here: try more steps, or look at the "
                     "system view.")
    return text + _rollout_options(data)


def _not_conserved(data, q: str) -> str:
    """A quantity the truth does not conserve (a damped pendulum's energy): each model's
    largest error against the truth's own Q(t), and the power each field drains."""
    evs = {m: data.latest_eval[m] for m in data.methods if m in data.latest_eval}
    worst = {m: ev.drift[q].largest for m, ev in evs.items() if q in ev.drift}
    secs = max((p.elapsed for p in data.progress.values()), default=0.0)
    sym = {"energy": "E"}.get(q, q)
    text = (f"Done ({secs:.0f} s of training per method). With these parameters {q} is not conserved, so "
            f"each curve is a model's {q} error against the truth's own {sym}(t). Largest over the rollout: "
            + " · ".join(f"{theme.SHORT[m]} {_fmt(v)}" for m, v in worst.items()) + ".")
    power = {m: ev.view["power"] for m, ev in evs.items() if "power" in ev.view}
    true = next((ev.view["power_true"] for ev in evs.values() if "power_true" in ev.view), None)
    if power and true is not None:
        text += (f" Energy drained per unit time on the test orbits: truth {true:.3g}; "
                 + " · ".join(f"{theme.SHORT[m]} {v:.3g}" for m, v in power.items())
                 + ". A model that holds its energy (HNN) drains none; the port-Hamiltonian one can only drain.")
    return text


def _rollout_options(data) -> str:
    """What the rollout options did, and what they did not: the sentence a student needs
    to tell 'exact in what you see' from 'right'."""
    cfg, evs = data.config, data.latest_eval
    text = ""
    if cfg.projection and data.system.kind == "ode":
        paths = [f"{theme.SHORT[m]} {_fmt(ev.trajectory_error.largest)} "
                 f"(without projection {_fmt(ev.unprojected['trajectory'].largest)})"
                 for m, ev in evs.items() if ev.trajectory_error is not None and "trajectory" in ev.unprojected]
        if paths:
            text += (" Projection holds the chosen invariants for every model; it does not fix the path. "
                     "Largest trajectory error over the rollout: " + " · ".join(paths) + ".")
    elif cfg.projection:
        text += (" Projection on: the dye rides each field's divergence-free part, so its mass is exact; "
                 "the velocity error it costs is under the dye view.")
    if cfg.integrator == "discrete_gradient":
        own = [f"{theme.SHORT[m]} {_fmt(ev.learned_drift['energy'].largest)} "
               f"(under RK4 {_fmt(ev.learned_drift['energy_rk4'].largest)})"
               for m, ev in evs.items() if "energy_rk4" in ev.learned_drift]
        if own:
            text += (" Discrete gradient: the learned energy is held in every step, " + " · ".join(own)
                     + "; the true energy is only as good as the learned one.")
    return text
