"""The phases of a session's run, and of a sweep: explicit state machines.

A session changes phase only through :meth:`app.session.LabSession._enter` (with its
status line), or ``_set_phase`` directly for a discarded run's silent return to idle;
the phase and ``running``, which follows from it, are read-only elsewhere. The status
line's colour follows from the phase, and no logic reads the status text.
"""

from __future__ import annotations

#: the phases of a session's run, and the colour of the status line in each
PHASES = {
    "idle": "info",
    "queued": "running",
    "preparing": "running",
    "training": "running",
    "paused": "info",
    "stopping": "warning",
    "done": "success",
    "stopped": "warning",
    "diverged": "danger",
    "failed": "danger",
}
#: phases in which a run exists (Train replaces it, Stop ends it)
ACTIVE = ("queued", "preparing", "training", "paused", "stopping")
ENDED = ("done", "stopped", "diverged", "failed")
NEW = {"idle", "queued", "preparing"}
#: which phase may follow which: a new run (or none) from anywhere; a run goes forward only
TRANSITIONS = {
    "idle": NEW,
    "queued": {*NEW, "training", "stopping", *ENDED},
    "preparing": {*NEW, "training", "stopping", *ENDED},
    "training": {*NEW, "training", "paused", "stopping", *ENDED},
    # waiting at an evaluation boundary: Step and Resume train on, Stop ends it
    "paused": {*NEW, "training", "stopping", *ENDED},
    "stopping": {*NEW, "stopping", *ENDED},
    **{p: NEW for p in ENDED},
}

#: a sweep's phases (the sweep card, :class:`app.sweep_view.SweepView`): the session's
#: vocabulary and colours, less what a sweep has no use for (it is not queued behind
#: anything the page can see, prepares nothing apart and never pauses or diverges; a
#: diverged cell is a row, not the sweep's end). ``failed``: the sweep itself raised.
SWEEP_PHASES = {p: PHASES[p] for p in ("idle", "training", "stopping", "done", "stopped", "failed")}
SWEEP_ACTIVE = ("training", "stopping")
SWEEP_ENDED = ("done", "stopped", "failed")
#: a new sweep (``training``) or none (``idle``: a results file opened) from anywhere; a
#: sweep goes forward only: Stop asked, then ended (a sweep can finish before it stops)
SWEEP_TRANSITIONS = {
    "idle": {"idle", "training"},
    "training": {"idle", "training", "stopping", *SWEEP_ENDED},
    "stopping": {"idle", "training", "stopping", *SWEEP_ENDED},
    **{p: {"idle", "training"} for p in SWEEP_ENDED},
}
