"""A plugin file (``conserv --plugin tests/oscillator_plugin.py``, ``CONSERV_PLUGINS``):
registers the method and the system that ``tests/test_one_file_additions.py`` defines,
on import. What a user's own file looks like is that test file; this one only loads it."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("one_file_additions", Path(__file__).with_name("test_one_file_additions.py"))
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_module.register_all()
