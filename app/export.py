"""A run's results as files: the curves as CSV (long form) and the summary as JSON, in
the shape of ``conserv compare --json``."""

from __future__ import annotations

import io
import json

import pandas as pd

from conserv_core import methods, training

COLUMNS = ["method", "curve", "quantity", "x", "value"]


def curves_frame(data) -> pd.DataFrame:
    """Every curve in long form: method, curve, quantity, x, value."""
    rows = []
    for m, hist in data.history.items():
        for p in hist:
            rows.append((m, "loss", "loss", p.step, p.loss))
            rows.append((m, "violation", "violation", p.step, p.violation))
    # whose multipliers the rows are (the one method that learns them)
    owner = next((m for m in data.methods if methods.get_method(m).has_multipliers), "")
    for step, name, value in data.mult_rows:
        rows.append((owner, "multiplier", name, step, value))
    evs = dict(data.latest_eval)
    if data.truth is not None:
        evs = {"truth": data.truth, **evs}
    for m, ev in evs.items():
        for kind, curves in (("drift", ev.drift), ("drift_ood", ev.drift_ood), ("learned_drift", ev.learned_drift)):
            for q, c in curves.items():
                rows.extend((m, kind, q, t, r) for t, r in zip(c.t, c.rel))
    return pd.DataFrame(rows, columns=COLUMNS)

def summary(data) -> dict:
    """The comparison's summary, in the shape of ``conserv compare --json``
    (:func:`conserv_core.training.comparison_summary`); a method still training says
    ``"running"``."""
    rows = []
    for m in data.methods:
        fin, prog = data.finished.get(m), data.progress.get(m)
        rows.append(training.method_summary(m, fin.status if fin else "running", fin.message if fin else "",
                                            prog.elapsed if prog else 0.0, prog.step if prog else 0,
                                            data.latest_eval.get(m)))
    return training.comparison_summary(data.system, data.config, data.truth, rows)


def results_csv(data) -> io.StringIO:
    """The curves of ``data`` (a :class:`app.rundata.LiveData`, or None) as CSV."""
    buf = io.StringIO()
    if data is not None:
        curves_frame(data).to_csv(buf, index=False)
    else:
        buf.write(",".join(COLUMNS) + "\n")
    buf.seek(0)
    return buf


def results_json(data, url_query: str) -> io.StringIO:
    """The summary of ``data`` (or an empty one) with the link that reproduces it."""
    payload = summary(data) if data is not None else {}
    payload["url_query"] = url_query
    text = json.dumps(payload, indent=1, default=_json_default, allow_nan=True)
    text = text.replace("NaN", "null").replace("-Infinity", "null").replace("Infinity", "null")
    return io.StringIO(text)


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
