"""Colours, labels and short texts shared by every view.

One colour per method, kept across all views (Okabe–Ito palette: readable by people with
the common colour-vision deficiencies). The truth is always black and dashed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conserv_core import methods

@dataclass(frozen=True)
class MethodStyle:
    """How a method is drawn in every view: its colour (hex), its short legend name (the
    engine's titles are for cards and menus), and its line."""

    color: str
    short: str
    dash: str = "solid"


#: method key -> style; a method not listed gets one from :func:`style`
STYLES: dict[str, MethodStyle] = {
    "baseline": MethodStyle("#D55E00", "baseline (no constraint)"),  # vermillion: the one that drifts
    "hnn": MethodStyle("#0072B2", "HNN (hard)"),  # blue
    "lnn": MethodStyle("#CC79A7", "LNN (hard)"),  # reddish purple
    "divfree": MethodStyle("#009E73", "div-free (hard)"),  # bluish green
    "penalty": MethodStyle("#E69F00", "penalty (soft)"),  # orange
    "auglag": MethodStyle("#56B4E9", "aug. Lagrangian (mixed)"),  # sky blue
    "phnn": MethodStyle("#882255", "port-Hamiltonian (hard)"),  # wine (Tol's muted): the dissipative one
    "shnn": MethodStyle("#332288", "symmetric HNN (hard)"),  # indigo (Tol's muted): the Noether one
    "truth": MethodStyle("#222222", "truth (same integrator)", "dashed"),
}

#: colours for methods without a style of their own (the rest of Tol's muted palette), in
#: the order such methods were registered
SPARE_COLORS = ("#117733", "#999933", "#44AA99", "#AA4499", "#DDCC77", "#88CCEE", "#661100", "#6699CC")

_KIND_WORD = {"none": "no constraint", "hard": "hard", "soft": "soft", "mixed": "mixed"}


def style(key: str) -> MethodStyle:
    """The style of method ``key``: its own, or for a method registered without one, a
    spare colour and ``"<key> (<kind>)"``; any other key is drawn grey under its name."""
    if key in STYLES:
        return STYLES[key]
    m = methods.ALL_METHODS.get(key)
    if m is None:
        return MethodStyle("#888888", key)
    unstyled = [k for k in methods.ALL_METHODS if k not in STYLES]
    color = SPARE_COLORS[unstyled.index(key) % len(SPARE_COLORS)]
    return MethodStyle(color, f"{key} ({_KIND_WORD.get(m.kind, m.kind)})")


class _StyleColumn(Mapping):
    """One field of every method's style as a read-only mapping (``COLORS[m]``,
    ``SHORT[m]``) that answers for any key, registered later or not at all."""

    def __init__(self, field: str):
        self._field = field

    def __getitem__(self, key: str) -> str:
        return getattr(style(key), self._field)

    def __iter__(self):
        return iter(dict.fromkeys([*STYLES, *methods.ALL_METHODS]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*STYLES, *methods.ALL_METHODS]))


#: method key -> colour (hex); every view draws a method in this colour
COLORS: Mapping[str, str] = _StyleColumn("color")
#: method key -> short legend name
SHORT: Mapping[str, str] = _StyleColumn("short")

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
    # short enough for a half-width plot (the caption says that energy is not conserved)
    "energy": ("Energy: error against the truth's E(t)", "|E(t) − E_true(t)| / |E(0)|"),
}

#: (title, y label) of the plot of each network's own learned energy along its rollout, when
#: it cannot share the true energy's axis (energy not conserved: that axis is an error)
LEARNED_ENERGY = ("Each network's own learned energy Hθ", "|Hθ(t) − Hθ(0)| / |Hθ(0)|")


def invariant_labels(system, q: str) -> tuple[str, str]:
    """Title and y label of drift plot ``q`` for ``system`` (conserved or not)."""
    if system.kind == "ode" and not system.is_conserved(q):
        return NOT_CONSERVED.get(q, (f"{q}: error against the truth's {q}(t)", f"|{q}(t) − {q}_true(t)| / s"))
    return INVARIANTS.get(q, (q, q))


#: a live demo's settings for a system that declares none (``System.demo``)
DEMO_CONFIG_OTHER: dict = dict(steps=600, width=48)


def demo_config(system: str) -> dict:
    """The settings of a live demo of ``system``: about 20 s on a busy 2-core machine."""
    from conserv_core.systems import ALL_SYSTEMS

    cls = ALL_SYSTEMS.get(system)
    return dict(cls.demo) if cls is not None and cls.demo else dict(DEMO_CONFIG_OTHER)


def default_methods(system: str, valid: list[str] | None = None) -> list[str]:
    """The methods ticked when ``system`` is chosen (:func:`conserv_core.methods.default_methods`)."""
    from conserv_core.systems import get_system

    return methods.default_methods(get_system(system), valid)


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
    return system.look_for or system.teaching_note


def method_title(key: str) -> str:
    return methods.ALL_METHODS[key].title if key in methods.ALL_METHODS else key


def chip(key: str, text: str | None = None, line: str | None = None) -> str:
    """HTML for a coloured legend chip (``line``: solid, dashed, dotted, or the plots'
    dotdash / dashdot, drawn thinner; default the method's own) and a name."""
    color = COLORS[key]
    line = style(key).dash if line is None else line
    css = {"dotdash": "dotted", "dashdot": "dashed"}.get(line, line)
    px = 2 if css != line else 3
    rule = f"border-top: {px}px {css} {color}; width: 22px; display: inline-block;" \
           " vertical-align: middle; margin-right: 6px"
    return f'<span style="white-space: nowrap"><span style="{rule}"></span>{text or SHORT[key]}</span>'


#: a disabled button greys out whatever its colour (a tan disabled Stop looked clickable)
BUTTON_CSS = """
.bk-btn:disabled, .bk-btn[disabled], .bk-btn.bk-disabled {
  background-color: #eceef1 !important; color: #9aa0a6 !important; border-color: #d5d8dc !important;
  cursor: not-allowed; opacity: 1; box-shadow: none;
}
"""

#: long preset names: the closed menu shows as much of them as the sidebar allows
SELECT_CSS = """
select { font-size: 13px; text-overflow: ellipsis; }
"""

CSS = """
.cl-status { font-size: 15px; line-height: 1.35; padding: 8px 12px; border-radius: 6px; }
.cl-status.info { background: #eef4fb; color: #163a5f; }
.cl-status.running { background: #eef7ef; color: #1b4d24; }
.cl-status.success { background: #e8f6ee; color: #11502c; }
.cl-status.warning { background: #fff6e0; color: #6b4800; }
.cl-status.danger { background: #fdecea; color: #7a1a12; }
.cl-legend { font-size: 13px; display: flex; flex-wrap: wrap; gap: 14px; align-items: center; }
.cl-look { font-size: 14px; color: #333; }
.cl-lesson { background: #f4f1fb; border-left: 4px solid #5b3f9e; padding: 8px 14px; border-radius: 4px;
             font-size: 14px; color: #222; }
.cl-lesson-title { font-size: 18px; font-weight: 600; color: #3b2870; margin-bottom: 4px; }
.cl-lesson ol { margin: 2px 0 2px 0; padding-left: 22px; }
.cl-muted { color: #666; font-size: 12px; }
"""
