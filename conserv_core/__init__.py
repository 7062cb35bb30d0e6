"""Conservation Lab engine: physical systems, conservation-respecting models, training.

The engine never imports Panel or HoloViews; the dashboard in ``app/`` talks to it through
this public API and the trainer's progress records.
"""

from conserv_core import integrators, systems
from conserv_core.systems import ALL_SYSTEMS, ParameterError, get_system

__version__ = "0.1.0"

__all__ = ["ALL_SYSTEMS", "ParameterError", "get_system", "integrators", "systems", "__version__"]
