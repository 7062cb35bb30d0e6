"""Helpers the workshop notebooks share: train a comparison, tabulate it, plot drift.

The lessons call the engine (``conserv_core``) themselves; this file only keeps the
table and plotting code out of them. Colours and legend names are the dashboard's
(``app.theme``), so a method looks the same in a notebook as on the dashboard.

Import it from a notebook in this folder (``import workshop as ws``): Jupyter starts the
kernel in the notebook's folder.
"""

from __future__ import annotations

import time

import holoviews as hv
import numpy as np
import pandas as pd

from app.rundata import DRIFT_FLOOR, plot_drift
from app.theme import COLORS, INVARIANTS, SHORT, style
from conserv_core import metrics, training
from conserv_core.systems import System

#: drift values below this are drawn at it (a log axis has no zero): the dashboard's floor
FLOOR = DRIFT_FLOOR
WIDTH, HEIGHT = 420, 300
#: plot size with the legend outside on the right (so that it never hides a curve)
LEGEND_RIGHT = dict(width=WIDTH + 200, height=HEIGHT, legend_position="right")


def compare(system: System, methods: list[str], **overrides) -> training.Comparison:
    """Train ``methods`` side by side on ``system`` (the system's recommended settings,
    then ``overrides``) and print one line per method."""
    config = training.make_config(system.key, **overrides)
    t0 = time.perf_counter()
    comp = training.Comparison(system, list(methods), config).run()
    for key, tr in comp.trainers.items():
        note = "" if tr.status == "done" else f"  ({tr.message})"
        print(f"{SHORT[key]:24s} {tr.status:8s} {tr.step_count:5d} steps in {tr.elapsed:5.1f} s{note}")
    print(f"{time.perf_counter() - t0:.0f} s in all (data, truth and evaluations included)")
    return comp


def evaluations(comp: training.Comparison) -> dict[str, training.Evaluation]:
    """The truth's evaluation (same integrator, the floor) and each method's last one."""
    first = next(iter(comp.trainers.values()))
    return {"truth": training.truth_evaluation(first), **{k: tr.last_eval for k, tr in comp.trainers.items()}}


def table(evals: dict[str, training.Evaluation], ood: bool = True):
    """Largest drift over the rollout of every invariant, with its value at the end
    beside it (and, for learned-energy models, of their own energy), test error and
    constraint violation, one row per method. The largest is the number: a curve can
    cross zero at the horizon."""
    rows = {}
    for key, ev in evals.items():
        row = {}
        for q, c in ev.drift.items():
            row[f"max drift {q}"], row[f"drift {q} at end"] = c.largest, c.final
        if ood:
            row.update({f"OOD max drift {q}": c.largest for q, c in ev.drift_ood.items()})
        if "energy" in ev.learned_drift:
            row["own-energy max drift"] = ev.learned_drift["energy"].largest
        if key != "truth":
            row["test MSE"] = ev.test_mse
            row["violation"] = ev.violation
            if ood:
                row["OOD violation"] = ev.violation_ood
        rows[SHORT.get(key, key)] = row
    return pd.DataFrame(rows).T.style.format("{:.1e}", na_rep="")  # a pandas Styler: shows as a table


def curve(c: metrics.Curve, label: str, color: str, dash: str = "solid", ylabel: str = "drift") -> hv.Curve:
    """A drift curve for a log axis, prepared as the dashboard's (:func:`app.rundata.plot_drift`:
    t = 0 dropped, every drift is 0 there; zeros floored)."""
    d = plot_drift(c)
    return hv.Curve((d["t"], d["drift"]), "t", ylabel, label=label).opts(color=color, line_dash=dash)


def drift_plot(evals: dict[str, training.Evaluation], quantity: str, ood: bool = False,
               own: bool = False, title: str | None = None, mark_t: float | None = None) -> hv.Overlay:
    """Drift of ``quantity`` over time for every method, log scale; the truth dashed
    black. ``own=True`` adds each hard model's drift of its *own* learned energy, dotted;
    ``mark_t`` draws a dotted vertical line there (e.g. the end of the training data)."""
    name, ylabel = INVARIANTS.get(quantity, (quantity, "drift"))
    items = []
    for key, ev in evals.items():
        source = ev.drift_ood if ood else ev.drift
        if quantity in source:
            items.append(curve(source[quantity], SHORT[key], COLORS[key], style(key).dash, ylabel))
        learned = ev.learned_drift.get("energy_ood" if ood else "energy")
        if own and learned is not None:
            items.append(curve(learned, f"{SHORT[key]}: own energy", COLORS[key], "dotted", ylabel))
    if mark_t is not None:
        items.append(hv.VLine(mark_t).opts(color="gray", line_dash="dotted"))
    where = " (out of distribution)" if ood else ""
    return hv.Overlay(items).opts(
        logy=True, title=title or name + where, ylabel=ylabel, xlabel="time t", show_grid=True, **LEGEND_RIGHT)


def line(x, y, label: str, color: str, dash: str = "solid", kdims=("t", "value")) -> hv.Curve:
    """A plain curve in a method's colour (for quantities that are not drifts)."""
    return hv.Curve((np.asarray(x, float), np.asarray(y, float)), *kdims, label=label).opts(
        color=color, line_dash=dash)
