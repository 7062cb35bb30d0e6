"""What ``pn.serve`` needs besides the app: extra keyword arguments for every serving mode."""

from __future__ import annotations


def serve_kwargs() -> dict:
    """Keyword arguments for ``pn.serve`` shared by every way of serving the dashboard."""
    return {}
