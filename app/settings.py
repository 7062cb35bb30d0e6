"""Which settings a session shows and a link carries: one list per kind, read by the
controls, the URL sync and the session."""

from __future__ import annotations

import json

import param

from conserv_core import training
from conserv_core.systems import ALL_SYSTEMS, FieldSystem, ODESystem

#: training settings that get a widget
CONFIG_FIELDS = ["steps", "lr", "width", "seed", "lam", "mu", "mu_growth", "update_every", "lnn_form",
                 "integrator", "projection", "horizon", "ood_factor", "device", "invariants"]
#: training settings the URL carries: every one a run reads (threads is the server's, and
#: the dashboard sets eval_every from the number of refreshes it wants)
URL_CONFIG_FIELDS = [k for k in training.TrainConfig.param if k not in ("name", "threads", "eval_every")]
#: training settings a change of system leaves alone
KEEP_ON_SYSTEM_CHANGE = ("seed", "device")

#: system parameters the controls show (the rest keep their defaults); a system not
#: named here shows the numbers and choices its own class declares
SYSTEM_FIELDS: dict[str, list[str]] = {
    "pendulum": ["mass", "length", "gravity", "damping"],
    "nbody": ["n_bodies", "preset", "G", "softening"],
    "flow": ["grid", "viscosity", "initial", "field_seed"],
}


def url_system_fields(key: str) -> list[str]:
    """Every scalar parameter of system ``key``: what a link carries (tuples and lists,
    which only presets set, travel as the preset's name)."""
    return [n for n, p in ALL_SYSTEMS[key].param.objects("existing").items()
            if n != "name" and isinstance(p, (param.Number, param.Selector, param.String, param.Boolean))
            and not isinstance(p, param.ListSelector)]


def system_fields(key: str) -> list[str]:
    """The parameters of system ``key`` that get a widget (and a place in the URL)."""
    if key in SYSTEM_FIELDS:
        return SYSTEM_FIELDS[key]
    cls = ALL_SYSTEMS[key]
    inherited = set(ODESystem.param) | set(FieldSystem.param)
    return [n for n, p in cls.param.objects("existing").items()
            if n not in inherited and isinstance(p, (param.Number, param.Selector))
            and not isinstance(p, param.ListSelector)]


def values(obj: param.Parameterized) -> dict:
    """Parameter values of ``obj`` (copies of lists), without ``name``."""
    return {k: list(v) if isinstance(v, list) else v for k, v in obj.param.values().items() if k != "name"}




def query_string(system_key: str, methods: list[str], config: training.TrainConfig, system) -> str:
    """The settings as a URL query (what the address bar holds when served)."""
    from urllib.parse import urlencode

    q = {"system": system_key, "methods": ",".join(methods)}
    for k in URL_CONFIG_FIELDS:
        v = getattr(config, k)
        if v is not None:
            q[k] = json.dumps(v) if isinstance(v, list) else v
    for k in url_system_fields(system_key):
        q[f"{system_key}.{k}"] = getattr(system, k)
    return urlencode(q)
