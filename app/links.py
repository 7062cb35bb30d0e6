"""A session's settings to and from a link (the URL query).

A link is read one key at a time (:func:`apply`): a bad key is refused alone, named with
what it takes, and the rest still applies; :func:`refusal` says the refused keys in one
status line. :func:`query_string` is the other way: the settings in use, as the address
bar holds them. Which settings travel, and how one is parsed, is :mod:`app.settings`;
when the address bar is read and written is the dashboard's
(:meth:`app.dashboard.Dashboard._sync_url`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conserv_core.devices import available_devices
from conserv_core.systems import ALL_SYSTEMS

from app import settings
from app.settings import url_config_fields, url_system_fields

if TYPE_CHECKING:
    from app.session import LabSession


def apply(session: "LabSession", pairs: list[tuple[str, str]]) -> list[str]:
    """Apply a link's query, given as ``(key, text)`` pairs, one key at a time: a bad
    key is refused alone and the rest still applies. The preset first, then the system
    (it resets the training settings to its defaults), its parameters, the methods and
    the training settings. Returns one plain clause per refused key, naming it and what
    it takes (see :func:`refusal`)."""
    s = session
    query: dict[str, str] = {}
    for key, text in pairs:  # the last of a repeated key wins, as in the address bar
        query[key] = text
    refused: list[str] = []

    def attempt(key: str, fn) -> None:
        try:
            fn()
        except settings.Refused as err:
            refused.append(str(err))
        except (ValueError, TypeError) as err:  # param's own checks (a system's cross-checks)
            refused.append(f"{settings.quote(key)}: {str(err).splitlines()[0] if str(err) else 'invalid'}")

    def pick(key: str, obj, name: str):
        value = settings.from_text(obj.param[name], key, query[key])
        if value != getattr(obj, name):
            obj.param.update(**{name: value})

    if "preset" in query:
        attempt("preset", lambda: pick("preset", s, "preset"))
    if "system" in query:
        attempt("system", lambda: pick("system", s, "system"))
    sysm, key = s.current_system, s.system
    fields = url_system_fields(key)
    config_keys = [k for k in query if k in url_config_fields()]
    for k in query:
        head, dot, name = k.partition(".")
        if dot and head == key and name in fields:
            attempt(k, lambda k=k, name=name: pick(k, sysm, name))
        elif dot and head in ALL_SYSTEMS:
            refused.append(f"{settings.quote(k)}: the link's system is the {sysm.title}, not "
                           f"{ALL_SYSTEMS[head].title}")
        elif k not in ("preset", "system", "methods") and k not in config_keys:
            refused.append(f"{settings.quote(k)}: no such setting")
    if "methods" in query:
        attempt("methods", lambda: _methods(s, query["methods"]))
    for k in config_keys:
        if k == "device":
            attempt(k, lambda: _device(s, query[k]))
        elif k == "invariants":
            attempt(k, lambda: _invariants(s, query[k]))
        else:
            attempt(k, lambda k=k: pick(k, s.config, k))
    return refused


def refusal(refused: list[str]) -> str:
    """The status line that names a link's refused parts ("" when none was)."""
    if not refused:
        return ""
    return "Link settings refused (the rest of the link applies): " + "; ".join(refused) + "."


def query_string(session: "LabSession") -> str:
    """The settings as a URL query (what the address bar holds when served)."""
    s = session
    return settings.query_string(s.system, s.methods, s.config, s.current_system)


def _methods(s: "LabSession", text: str) -> None:
    if len(text) > settings.MAX_VALUE_CHARS:
        raise settings.Refused(f"methods: {len(text):,} characters long "
                               f"(at most {settings.MAX_VALUE_CHARS:,})")
    valid = s.valid_methods()
    keys = settings.method_keys(text)
    bad = [k for k in keys if k not in valid]
    good = [k for k in keys if k in valid]
    if good and good != s.methods:
        s.methods = good
    if bad or not keys:
        raise settings.refusal("methods", ",".join(bad), why=f"the {s.current_system.title} takes "
                               f"{', '.join(valid)}")


def _device(s: "LabSession", text: str) -> None:
    value = settings.from_text(s.config.param["device"], "device", text)
    here = available_devices()
    if value not in here:
        raise settings.refusal("device", text, why=f"not available here; one of {', '.join(here)}")
    s.config.device = value


def _invariants(s: "LabSession", text: str) -> None:
    value = settings.from_text(s.config.param["invariants"], "invariants", text)
    names = list(s.current_system.invariant_names())
    bad = [n for n in value if n not in names]
    if bad:
        raise settings.refusal("invariants", ",".join(bad), why=f"the {s.current_system.title}'s invariants are "
                               f"{', '.join(names)}")
    s.config.invariants = list(value)
