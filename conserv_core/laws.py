"""Which law, which method: the conservation laws the lab names, each against the three
ways a network can be made to respect it (none, a soft penalty in the loss, a hard
construction), and the preset that shows it.

A row is data, not prose in a view: the dashboard's "Which law, which method" card and
the README's table are both drawn from :data:`LAWS`, and ``tests/test_laws.py`` checks
that every preset exists and every method named applies to its system. A cell's
comparison is the baseline beside the cell's methods (:meth:`Law.query`), so one click
runs exactly that comparison.

Dissipation is a row of its own: energy that is lost at a known rate is a law too, and
the hard method that is right for it (the port-Hamiltonian model) is not the one that is
right for conserved energy. Charge has no system in the lab yet (issue 32): its row says
so rather than pointing at a stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the table's columns: no constraint, a penalty in the loss, a construction
COLUMNS = ("baseline", "soft", "hard")


@dataclass(frozen=True)
class Law:
    """One row: a law, the preset that shows it, and the methods in each column."""
    key: str
    #: what a student reads in the row's first cell
    name: str
    #: the quantity, as the lab measures it
    quantity: str
    #: the preset that shows it (None: not in the lab yet, :attr:`missing` says why)
    preset: str | None
    soft: tuple[str, ...] = ()
    hard: tuple[str, ...] = ()
    #: settings the row's links add to the preset's (``invariants`` a soft method acts on)
    settings: tuple[tuple[str, str], ...] = ()
    #: why a column is empty, by column
    missing: tuple[tuple[str, str], ...] = ()

    def methods(self, column: str) -> tuple[str, ...]:
        """The methods of ``column`` (the baseline's column is the baseline alone)."""
        if column not in COLUMNS:
            raise ValueError(f"column must be one of {', '.join(COLUMNS)}; got {column!r}")
        if self.preset is None:
            return ()
        return {"baseline": ("baseline",), "soft": self.soft, "hard": self.hard}[column]

    def why_empty(self, column: str) -> str:
        return dict(self.missing).get(column, "")

    def query(self, column: str) -> list[tuple[str, str]] | None:
        """The link's settings for ``column``'s comparison: the preset, the baseline beside
        the column's methods (the baseline's column: the baseline alone, drifting against
        the truth), and the row's settings. None when the cell is empty."""
        ms = self.methods(column)
        if not ms:
            return None
        # the methods always, even the baseline's alone: a preset already chosen is not
        # applied again, so the methods a student ticked since would otherwise stay
        shown = ms if column == "baseline" else ("baseline", *ms)
        return [("preset", self.preset), ("methods", ",".join(shown)), *self.settings]


LAWS: tuple[Law, ...] = (
    Law("energy", "Energy", "|E(t) − E(0)| / |E(0)| along rollouts", "pendulum-hard-vs-soft",
        soft=("penalty", "auglag"), hard=("hnn", "lnn")),
    Law("dissipation", "Dissipation (energy lost at a known rate)", "|E(t) − E_true(t)| / |E(0)|",
        "damped-pendulum", hard=("phnn",),
        missing=(("soft", "A penalty on dE/dt = 0 would force the wrong law here: the truth loses energy."),)),
    Law("momentum", "Momentum", "|P(t) − P(0)| along n-body rollouts", "momentum-by-symmetry",
        soft=("penalty",), hard=("shnn",), settings=(("invariants", "momentum"),)),
    Law("angular_momentum", "Angular momentum", "|L(t) − L(0)| along n-body rollouts", "momentum-by-symmetry",
        soft=("penalty",), hard=("shnn",), settings=(("invariants", "angular_momentum"),)),
    Law("mass", "Mass / volume", "dye mass carried by the learned flow; rms ∇·u", "flow-mass",
        soft=("penalty", "auglag"), hard=("divfree",)),
    Law("charge", "Charge", "Q = ∫ρ dA of a density carried by a flow", None,
        missing=tuple((c, "No charge system in the lab yet: a density carried by the flow, with the "
                          "continuity equation built in, is being added.") for c in COLUMNS)),
)


def get_law(key: str) -> Law:
    for law in LAWS:
        if law.key == key:
            return law
    raise ValueError(f"law must be one of {', '.join(law.key for law in LAWS)}; got {key!r}")


__all__ = ["COLUMNS", "LAWS", "Law", "get_law"]
