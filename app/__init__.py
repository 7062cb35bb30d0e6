"""Conservation Lab's dashboard: a Panel app on the ``conserv_core`` engine.

    conserv serve                 # or: python -m app, panel serve app/dashboard.py

In a notebook::

    import app
    app.extension(inline=True)    # offline notebooks need the JavaScript inline
    dash = app.Dashboard()
    dash                          # the whole dashboard; or dash.controls, dash.drift_view, ...

The engine never imports this package; the dashboard learns about training only through
the trainer's records.
"""

from app.dashboard import Dashboard, create_app, extension
from app.session import LabSession
from app.theme import COLORS

__all__ = ["COLORS", "Dashboard", "LabSession", "create_app", "extension"]
