"""Your own methods and systems, loaded wherever runs execute.

A plugin is a Python module, named (``mylab.methods``) or given as a file
(``./my_oscillator.py``), that registers what it adds when imported
(:func:`conserv_core.methods.register`, :func:`conserv_core.systems.register`,
:func:`conserv_core.constraints.register`). Load it with ``conserv --plugin SPEC ...`` or
``conserv serve --plugin SPEC``, or list specs in ``CONSERV_PLUGINS`` (separated by commas).
The Dask executor passes the loaded plugins to every worker
(:class:`~conserv_core.runs.WorkerSetup`), so a served room and a sweep train them on the
cluster too; a worker must be able to import the module, or read the file at the same path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path

from conserv_core.systems.base import ParameterError

#: the environment variable that names plugins to load (comma-separated specs)
ENV = "CONSERV_PLUGINS"
_loaded: list[str] = []


def _normal(spec: str) -> str:
    spec = spec.strip()
    return str(Path(spec).expanduser().resolve()) if spec.endswith(".py") else spec


def load(specs) -> list[str]:
    """Import each plugin of ``specs`` not loaded yet (in order); returns every plugin
    loaded in this process so far. A file path must end in ``.py``.

    Raises:
        ParameterError: a plugin that cannot be found or fails on import (the message
            names it and the error).
    """
    for raw in specs:
        if not raw or not raw.strip():
            continue
        spec = _normal(raw)
        if spec in _loaded:
            continue
        _loaded.append(spec)  # before the import: a plugin that imports the app loads nothing twice
        try:
            if spec.endswith(".py"):
                if not Path(spec).is_file():
                    raise FileNotFoundError(f"no file {spec}")
                name = f"conserv_plugin_{Path(spec).stem}_{hashlib.sha1(spec.encode()).hexdigest()[:8]}"
                module_spec = importlib.util.spec_from_file_location(name, spec)
                module = importlib.util.module_from_spec(module_spec)
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except Exception as err:  # any failure of a user's module is reported the same way
            _loaded.remove(spec)
            raise ParameterError(f"plugin {raw!r} could not be loaded: {type(err).__name__}: {err}") from err
    return list(_loaded)


def from_env() -> list[str]:
    """The plugin specs named in :data:`ENV`."""
    return [s for s in os.environ.get(ENV, "").split(",") if s.strip()]


def loaded() -> list[str]:
    """The plugins loaded in this process, normalised (files as absolute paths)."""
    return list(_loaded)


def load_all(extra=()) -> list[str]:
    """Load the plugins of :data:`ENV`, then ``extra``; export the full list in
    :data:`ENV`, so processes started from this one (a server's forks, a local cluster's
    workers) load the same."""
    out = load([*from_env(), *extra])
    if out:
        os.environ[ENV] = ",".join(out)
    return out
