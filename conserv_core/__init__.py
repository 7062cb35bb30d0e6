"""Conservation Lab engine: physical systems, conservation-respecting models, training.

The engine never imports Panel or HoloViews; the dashboard in ``app/`` talks to it through
this public API and the trainer's progress records.
"""

from conserv_core import integrators, systems
from conserv_core.systems import ALL_SYSTEMS, ParameterError, get_system


def sweep(system, methods, seeds=(0,), out=None, scheduler=None, workers=0, **axes):
    """A sweep in three lines (:func:`conserv_core.sweeps.sweep`): ``axes`` are TrainConfig
    fields or system parameters given as lists; returns a pandas DataFrame, one row a cell.

        import conserv_core
        df = conserv_core.sweep("pendulum", ["baseline", "penalty"], seeds=range(3), lam=[0.1, 1, 10])
    """
    from conserv_core import sweeps  # pandas and the trainer load on first use, not on import

    return sweeps.sweep(system, methods, seeds=seeds, out=out, scheduler=scheduler, workers=workers, **axes)

__version__ = "0.1.0"

__all__ = ["ALL_SYSTEMS", "ParameterError", "get_system", "integrators", "sweep", "systems", "__version__"]
