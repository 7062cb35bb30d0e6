"""What the registries (systems, architectures, constraints, methods) share: an entry
added for the length of a ``with`` block, for tests and notebooks that try one out."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def scoped(register: Callable, unregister: Callable[[str], None], key: str, *entry) -> Iterator:
    """``register(*entry)`` now, ``unregister(key)`` when the block ends (even on an error);
    yields the entry's last argument (the class or record registered)."""
    register(*entry)
    try:
        yield entry[-1]
    finally:
        unregister(key)
