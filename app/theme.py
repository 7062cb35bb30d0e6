"""Colours, labels and short texts shared by every view.

One colour per method, kept across all views (Okabe–Ito palette: readable by people with
the common colour-vision deficiencies). The truth is always black and dashed.
"""

from __future__ import annotations

from conserv_core import methods

#: method key -> colour (hex); every view draws a method in this colour
COLORS: dict[str, str] = {
    "baseline": "#D55E00",  # vermillion: the one that drifts
    "hnn": "#0072B2",  # blue
    "lnn": "#CC79A7",  # reddish purple
    "divfree": "#009E73",  # bluish green
    "penalty": "#E69F00",  # orange
    "auglag": "#56B4E9",  # sky blue
    "phnn": "#882255",  # wine (Tol's muted palette): the dissipative hard method
    "shnn": "#332288",  # indigo (Tol's muted palette): the symmetric (Noether) hard method
    "truth": "#222222",
}

#: short legend names (the engine's titles are for cards and menus)
SHORT: dict[str, str] = {
    "baseline": "baseline (no constraint)",
    "hnn": "HNN (hard)",
    "lnn": "LNN (hard)",
    "divfree": "div-free (hard)",
    "penalty": "penalty (soft)",
    "auglag": "aug. Lagrangian (mixed)",
    "phnn": "port-Hamiltonian (hard)",
    "shnn": "symmetric HNN (hard)",
    "truth": "truth (same integrator)",
}

#: invariant key -> (plot title, y-axis label)
INVARIANTS: dict[str, tuple[str, str]] = {
    "energy": ("Energy drift", "|E(t) − E(0)| / |E(0)|"),
    "momentum": ("Linear momentum drift", "|P(t) − P(0)| / Σ|p_i|"),
    "angular_momentum": ("Angular momentum drift", "|L(t) − L(0)| / Σ|L_i|"),
    "mass": ("Dye mass drift", "|M(t) − 1|  (mass of the dye patch)"),
    "divergence": ("Compressibility", "rms ∇·u / rms vorticity"),
}

#: invariant key -> (title, y label) when the system does not conserve it with its
#: parameters: each model's curve is then its error against the truth's own Q(t)
NOT_CONSERVED: dict[str, tuple[str, str]] = {
    "energy": ("Energy error against the truth's E(t) (energy is not conserved)", "|E(t) − E_true(t)| / |E(0)|"),
}


def invariant_labels(system, q: str) -> tuple[str, str]:
    """Title and y label of drift plot ``q`` for ``system`` (conserved or not)."""
    if system.kind == "ode" and not system.is_conserved(q):
        return NOT_CONSERVED.get(q, (f"{q}: error against the truth's {q}(t)", f"|{q}(t) − {q}_true(t)| / s"))
    return INVARIANTS.get(q, (q, q))


#: the time axis of rollouts, with units
TIME_LABEL: dict[str, str] = {
    "pendulum": "time t (s)",
    "nbody": "time t (units with G = m = 1)",
    "flow": "time t (s, domain 2π × 2π)",
    "spring": "time t (s)",
    "double_pendulum": "time t (s)",
}

#: axis labels of the system view's portrait, for systems whose units we know
PORTRAIT_AXES: dict[str, tuple[str, str]] = {
    "pendulum": ("angle q (rad)", "angular momentum p (kg·m²/s)"),
    "spring": ("displacement q (m)", "momentum p (kg·m/s)"),
    "double_pendulum": ("angle of the first rod q1 (rad)", "angle of the second rod q2 (rad)"),
}

#: one line above the plots: what a student should look at first
LOOK_FOR: dict[str, str] = {
    "pendulum": (
        "Look at the energy-drift plot: the baseline's line climbs over time, the HNN stays close to "
        "the truth; in the phase portrait the baseline's orbits spiral while the HNN's stay closed."
    ),
    "nbody": (
        "Look at the three drift plots: a Hamiltonian network holds its energy but can still leak "
        "momentum; the symmetric HNN's momentum lines sit at the floor, kept by symmetry (Noether). In "
        "the orbit view, watch the learned bodies leave the true paths."
    ),
    "flow": (
        "Look at the dye-mass plot: the div-free network stays at zero drift by construction; in the "
        "∇·u map the baseline shows sources (red) and sinks (blue) that the true flow does not have."
    ),
}

#: settings for a live demo that finishes in about 20 s on a busy 2-core machine
DEMO_CONFIG: dict[str, dict] = {
    "pendulum": dict(steps=600, width=48, lr=5e-3),
    "nbody": dict(steps=800, width=64, lr=3e-3),
    "flow": dict(steps=500, width=48, lr=3e-3),
}

#: the same for a system not listed above
DEMO_CONFIG_OTHER: dict = dict(steps=600, width=48)

#: methods ticked when a system is chosen (the baseline always among them)
DEFAULT_METHODS: dict[str, list[str]] = {
    "pendulum": ["baseline", "hnn", "penalty"],
    "nbody": ["baseline", "hnn", "penalty"],
    "flow": ["baseline", "divfree", "penalty"],
}


def default_methods(system: str, valid: list[str]) -> list[str]:
    """The baseline, the first hard method that applies, and the penalty."""
    if system in DEFAULT_METHODS:
        return [m for m in DEFAULT_METHODS[system] if m in valid]
    hard = [m for m in ("hnn", "divfree", "lnn") if m in valid][:1]
    return [m for m in ["baseline", *hard, "penalty"] if m in valid]


#: the line for a system whose energy is not conserved with its parameters (damping on)
LOOK_FOR_DISSIPATIVE = (
    "Damping is on, so energy must fall as the truth's does. The energy plot shows each model's error "
    "against the truth's E(t): the HNN keeps its energy and is wrong by all that was lost; the "
    "port-Hamiltonian network can only lose energy; the baseline may follow, but nothing makes it."
)


LOOK_FOR_BROKEN_SYMMETRY = (
    "A trap pulls every body towards a fixed point, so space is no longer the same everywhere and total "
    "momentum is not conserved: the centre of mass swings. The momentum plot shows each model's error "
    "against the truth's P(t). The symmetric HNN keeps P exactly, by construction, and so it is wrong here; "
    "the HNN and the baseline can follow the swing."
)


def look_for(system) -> str:
    """The 'what to look for' line for a system (its own teaching note if none here)."""
    if system.kind == "ode" and "energy" in system.invariant_names() and not system.is_conserved("energy"):
        return LOOK_FOR_DISSIPATIVE
    if system.kind == "ode" and "momentum" in system.invariant_names() and not system.is_conserved("momentum"):
        return LOOK_FOR_BROKEN_SYMMETRY
    return LOOK_FOR.get(system.key, system.teaching_note)


def method_title(key: str) -> str:
    return methods.ALL_METHODS[key].title if key in methods.ALL_METHODS else key


def chip(key: str, text: str | None = None, line: str = "solid") -> str:
    """HTML for a coloured legend chip (``line``: solid, dashed, dotted, or the plots'
    dotdash / dashdot, drawn thinner) and a name."""
    color = COLORS.get(key, "#888")
    css = {"dotdash": "dotted", "dashdot": "dashed"}.get(line, line)
    px = 2 if css != line else 3
    style = f"border-top: {px}px {css} {color}; width: 22px; display: inline-block;" \
            " vertical-align: middle; margin-right: 6px"
    return f'<span style="white-space: nowrap"><span style="{style}"></span>{text or SHORT.get(key, key)}</span>'


CSS = """
.cl-status { font-size: 15px; line-height: 1.35; padding: 8px 12px; border-radius: 6px; }
.cl-status.info { background: #eef4fb; color: #163a5f; }
.cl-status.running { background: #eef7ef; color: #1b4d24; }
.cl-status.success { background: #e8f6ee; color: #11502c; }
.cl-status.warning { background: #fff6e0; color: #6b4800; }
.cl-status.danger { background: #fdecea; color: #7a1a12; }
.cl-legend { font-size: 13px; display: flex; flex-wrap: wrap; gap: 14px; align-items: center; }
.cl-look { font-size: 14px; color: #333; }
.cl-muted { color: #666; font-size: 12px; }
"""
