"""Which settings a session shows and a link carries (one list per kind, read by the
controls, the URL sync and the session), and the settings a system change resets and a
run freezes."""

from __future__ import annotations

import ast
import json
import math
import numbers

import param

from conserv_core import training
from conserv_core.systems import ALL_SYSTEMS, FieldSystem, ODESystem, System, get_system

from app import theme

#: training settings that get a widget whatever constraints and methods are registered;
#: the constraint settings card's are derived (:func:`constraint_fields`)
CONFIG_FIELDS = ["steps", "lr", "width", "seed", "integrator", "projection", "horizon", "ood_factor", "device",
                 "invariants"]


def url_config_fields() -> list[str]:
    """Training settings the URL carries: every one a run reads (threads is the server's,
    and the dashboard sets eval_every from the number of refreshes it wants). Read off
    ``TrainConfig`` when asked: a registered constraint's new setting travels too."""
    return [k for k in training.TrainConfig.param if k not in ("name", "threads", "eval_every")]


#: training settings a change of system leaves alone
KEEP_ON_SYSTEM_CHANGE = ("seed", "device")


def constraint_fields() -> list[str]:
    """The training settings the "Constraint settings" card shows, read off the registries
    when asked (a constraint or method registered later is shown by the next page): every
    registered constraint's ``settings``, in the registry's order, then the fields only
    some methods read (``Method.reads``, ``variant_field``: the LNN's form). Left out: a
    field another card shows (:data:`CONFIG_FIELDS`) and one declared with a negative
    ``precedence`` (param's "not a control"; μ's cap)."""
    from conserv_core import constraints, methods

    names = [n for c in constraints.CONSTRAINTS.values() for n in c.settings]
    names += [n for m in methods.ALL_METHODS.values() for n in (*m.reads, m.variant_field) if n]
    out: list[str] = []
    for n in names:
        p = training.TrainConfig.param[n] if n in training.TrainConfig.param else None
        if p is None or n in out or n in CONFIG_FIELDS or (p.precedence is not None and p.precedence < 0):
            continue
        out.append(n)
    return out


def config_fields() -> list[str]:
    """Every training setting that gets a widget: :data:`CONFIG_FIELDS` with
    :func:`constraint_fields` after the training card's (where the hand-written list had them)."""
    at = CONFIG_FIELDS.index("seed") + 1
    return [*CONFIG_FIELDS[:at], *constraint_fields(), *CONFIG_FIELDS[at:]]

def url_system_fields(key: str) -> list[str]:
    """Every scalar parameter of system ``key``: what a link carries (tuples and lists,
    which only presets set, travel as the preset's name)."""
    return [n for n, p in ALL_SYSTEMS[key].param.objects("existing").items()
            if n != "name" and isinstance(p, (param.Number, param.Selector, param.String, param.Boolean))
            and not isinstance(p, param.ListSelector)]


def system_fields(key: str) -> list[str]:
    """The parameters of system ``key`` that get a widget (and a place in the URL): those
    its class declares in ``controls``, else every number and choice it declares itself
    (the rest keep their defaults)."""
    cls = ALL_SYSTEMS[key]
    if cls.controls is not None:
        return list(cls.controls)
    inherited = set(ODESystem.param) | set(FieldSystem.param)
    return [n for n, p in cls.param.objects("existing").items()
            if n not in inherited and isinstance(p, (param.Number, param.Selector))
            and not isinstance(p, param.ListSelector)]


def values(obj: param.Parameterized) -> dict:
    """Parameter values of ``obj`` (copies of lists), without ``name``."""
    return {k: list(v) if isinstance(v, list) else v for k, v in obj.param.values().items() if k != "name"}


def system_defaults(key: str, system: System) -> dict:
    """The training settings a change to system ``key`` resets: those of its live demo,
    its own horizon and no invariant pinned (:data:`KEEP_ON_SYSTEM_CHANGE` and the
    server's threads are left alone)."""
    base = training.make_config(key, **theme.demo_config(key))
    out = {k: v for k, v in values(base).items() if k not in (*KEEP_ON_SYSTEM_CHANGE, "threads")}
    out["horizon"] = float(system.horizon)
    out["invariants"] = []
    return out


def method_keys(text: str) -> list[str]:
    """The keys of methods written as ``"a,b,c"`` (how a link and the session carry them)."""
    return [k.strip() for k in text.split(",") if k.strip()]


def run_config(config: training.TrainConfig, threads: int, evals_per_run: int) -> training.TrainConfig:
    """A fresh, validated copy of ``config`` for one run (later edits don't touch it), with
    the server's ``threads`` and ``eval_every`` set for ``evals_per_run`` refreshes."""
    out = values(config)
    out["threads"] = threads
    out["eval_every"] = max(1, math.ceil(out["steps"] / evals_per_run))
    return training.make_config(None, **out)


def run_system(key: str, system: System) -> System:
    """A fresh copy of ``system`` (the run keeps it while the user edits)."""
    return get_system(key, **values(system))


def query_string(system_key: str, methods: list[str], config: training.TrainConfig, system) -> str:
    """The settings as a URL query (what the address bar holds when served)."""
    from urllib.parse import urlencode

    q = {"system": system_key, "methods": ",".join(methods)}
    for k in url_config_fields():
        v = getattr(config, k)
        if v is not None:
            q[k] = json.dumps(v) if isinstance(v, (list, bool)) else v
    for k in url_system_fields(system_key):
        v = getattr(system, k)
        if v is not None:
            q[f"{system_key}.{k}"] = json.dumps(v) if isinstance(v, bool) else v
    return urlencode(q)


# -- checking a value before it is applied (links and typed widgets) ---------------------------
#: the longest value one setting may carry in a link (characters); a longer one is refused
#: unread (a 100 kB value must not reach the widgets or the status line)
MAX_VALUE_CHARS = 1000
#: how much of a refused value (or an unknown key) the notice quotes back
QUOTE_CHARS = 40


class Refused(ValueError):
    """A value a setting cannot take. ``str(err)`` is one short, plain-text clause that
    names the setting and what it takes (the status line escapes it, once)."""


def quote(text) -> str:
    """``text`` cut to :data:`QUOTE_CHARS` characters, for a notice."""
    text = str(text)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def _num(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e7:
        v = int(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def expected(p: param.Parameter) -> str:
    """What ``p`` takes, in words: "a whole number from 1 to 200,000", "one of a, b"."""
    if isinstance(p, param.Boolean):
        return "true or false"
    if isinstance(p, param.Selector):
        return "one of " + ", ".join(str(o) for o in p.objects)
    if isinstance(p, param.Number):
        kind = "a whole number" if isinstance(p, param.Integer) else "a number"
        lo, hi = p.bounds if p.bounds is not None else (None, None)
        incl_lo, incl_hi = getattr(p, "inclusive_bounds", (True, True))
        if lo is not None and hi is not None and incl_lo and incl_hi:
            return f"{kind} from {_num(lo)} to {_num(hi)}"
        parts = ([f"{'at least' if incl_lo else 'above'} {_num(lo)}"] if lo is not None else []) + \
                ([f"{'at most' if incl_hi else 'below'} {_num(hi)}"] if hi is not None else [])
        return " ".join([kind, " and ".join(parts)]).strip()
    if isinstance(p, param.List):
        return "a list of names"
    return "text"


def refusal(name: str, value, p: param.Parameter | None = None, why: str | None = None) -> Refused:
    """The clause for ``name`` refusing ``value``: what it takes (from ``p``) or ``why``."""
    if isinstance(value, float) and not isinstance(value, bool):
        value = f"{value:g}"
    shown = "is empty" if value is None or str(value).strip() == "" else f"“{quote(value)}”"
    return Refused(f"{quote(name)} {shown}: {why or 'takes ' + expected(p)}")


def check_value(p: param.Parameter, name: str, value):
    """``value`` as ``p`` holds it (a whole float becomes an int for an Integer), or
    :class:`Refused`. Stricter than param: ``True`` is no number (Python's bool is an
    int), and NaN or infinity lies in no range."""
    bad = refusal(name, value, p)
    if value is None:
        raise bad  # an emptied box: no widget setting here means "none"
    if isinstance(p, param.Boolean):
        if not isinstance(value, bool):
            raise bad
    elif isinstance(p, param.Selector):
        if value not in p.objects:
            raise bad
    elif isinstance(p, param.Number):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise bad
        if isinstance(p, param.Integer):
            if not float(value).is_integer():
                raise bad
            value = int(value)
        lo, hi = p.bounds if p.bounds is not None else (None, None)
        incl_lo, incl_hi = getattr(p, "inclusive_bounds", (True, True))
        if (lo is not None and (value < lo or (value == lo and not incl_lo))) or \
                (hi is not None and (value > hi or (value == hi and not incl_hi))):
            raise bad
    elif isinstance(p, param.List):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
    elif isinstance(p, param.String):
        if not isinstance(value, str):
            raise bad
    return value


def from_text(p: param.Parameter, name: str, text: str):
    """The value a link's ``text`` gives ``p``, checked (:func:`check_value`), or
    :class:`Refused`. Empty and over-long text is refused."""
    if text is None or text.strip() == "":
        raise refusal(name, "", p)
    if len(text) > MAX_VALUE_CHARS:
        raise Refused(f"{quote(name)}: {len(text):,} characters long (at most {MAX_VALUE_CHARS:,})")
    t = text.strip()
    bad = refusal(name, text, p)
    if isinstance(p, param.Boolean):
        if t.lower() not in ("true", "false", "1", "0"):
            raise bad
        value = t.lower() in ("true", "1")
    elif isinstance(p, param.Selector):
        match = [o for o in p.objects if str(o) == t]
        if not match:
            raise bad
        value = match[0]
    elif isinstance(p, param.Number):
        try:
            value = int(t) if isinstance(p, param.Integer) and t.lstrip("+-").isdigit() else float(t)
        except ValueError:
            raise bad from None
    elif isinstance(p, param.List):
        value = _names(t)
        if value is None:
            raise bad
    else:
        value = text
    return check_value(p, name, value)


def _names(text: str) -> list[str] | None:
    """A list of names from a link: JSON (``["energy"]``, what the address bar holds) or
    comma-separated (``energy,momentum``); ``None`` if neither."""
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None
    return [k.strip() for k in text.split(",") if k.strip()]
