"""Sweeps: a grid of settings -> one :class:`~conserv_core.runs.RunSpec` per cell -> one
tidy row per cell, appended to a results file as each run finishes.

    cells = sweeps.grid("pendulum", ["baseline", "penalty"], seeds=range(5),
                        config={"lam": [0.1, 1, 10], "steps": [500]})
    df = sweeps.run(cells, workers=2, out="pend.csv")        # or client=..., scheduler=...

or, in one call, ``conserv_core.sweep("pendulum", ["baseline", "penalty"], seeds=range(5),
lam=[0.1, 1, 10])``.

A cell trains ONE method: the sweep's unit of work, its row and its resume key. A method
does not read every ``TrainConfig`` field (the baseline has no λ; see
:data:`methods_mod.METHOD_FIELDS`), so :func:`grid` drops the swept fields a cell's method does
not read from its spec: the baseline at five λ is one run, not five identical ones, and
its row leaves ``lam`` empty (NaN). The grid says how many cells the full product had
(:attr:`Grid.requested`) and how many distinct runs remain (``len``).

Every cell is validated before any work starts (the system's and the config's ranges, the
method against the system, the work budget); a bad grid raises one
:class:`~conserv_core.systems.ParameterError` line.

:func:`run` carries the cells out in this process (serially), on a fresh ``LocalCluster``,
on a cluster by address, or on a caller's ``distributed.Client``; on Dask one plain task
per cell, at a priority below every live run's (:data:`PRIORITY`), so a room's Train is
never stuck behind a sweep. A task is a pure function of its spec: a worker that dies
mid-task makes Dask run it again elsewhere, and the same spec gives bit-identical metrics
on any worker. A failing or diverging cell is a row with its ``status``, never an
exception. pandas is imported lazily: the engine needs only torch, numpy and param; pandas
comes with the ``app`` extra.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import stat
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import param

from conserv_core import methods as methods_mod
from conserv_core import plugins, runs, training
from conserv_core.systems import ALL_SYSTEMS, ParameterError, get_system

#: a grid with more distinct runs than this is refused unless ``allow_many=True`` (``--yes``)
MAX_CELLS = 200
#: the Dask priority of a sweep's first task; the k-th task of a sweep gets ``PRIORITY - k``.
#: Live runs (:class:`runs.DaskExecutor`) are submitted at ``-order`` with ``order`` counting
#: runs from 0, so they stay above any sweep for the first billion runs of a server; two
#: sweeps sharing a cluster interleave (their k-th tasks tie), neither waits for the other
PRIORITY = -1_000_000_000
#: the columns every row has, in this order; then the swept fields, then the drifts
BASE_COLUMNS = ("cell", "system", "method", "seed")
METRIC_COLUMNS = ("status", "message", "steps", "train_seconds", "test_mse", "violation", "violation_ood",
                  "trajectory_error")
#: statuses a finished cell can have; ``stopped`` rows are never written to a results file
#: (so ``resume`` runs them again)
STATUSES = ("done", "diverged", "error", "stopped")


# ---------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One cell of a sweep.

    Attributes:
        spec: the run, ONE method; the swept fields its method does not read are left out.
        values: the cell's settings as plain values: ``system``, ``method``, ``seed`` and
            every swept field under its column name (:func:`column_name`; a field the
            method does not read is absent: NaN in its row).
        key: a stable id, the first 12 hex digits of the sha256 of the spec's sorted JSON
            (the same in any process and Python run): the row's ``cell`` and the resume key.
    """

    spec: runs.RunSpec
    values: dict
    key: str

    def __hash__(self) -> int:  # the spec and values hold dicts
        return hash(self.key)


class Grid(list):
    """The cells of :func:`grid` (a list), with ``requested``: the cells of the full product
    before runs that only differ in fields their method does not read were merged."""

    requested: int = 0

    def describe(self) -> str:
        return f"{self.requested} cells, {len(self)} distinct runs"


def column_name(field_name: str) -> str:
    """A swept field's column: its name, or ``config_<name>`` where a metric has that name
    (``steps`` is the steps trained; a swept ``steps`` is ``config_steps``)."""
    return f"config_{field_name}" if field_name in METRIC_COLUMNS else field_name


def _cell_value(v):
    """A setting as a row holds it: a list (``invariants``, a band) as one comma string."""
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v


def cell_key(spec: runs.RunSpec) -> str:
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _plain_value(prm: param.Parameter, v):
    """``v`` as the plain type of its parameter (so 1 and 1.0 are the same λ, and key)."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(prm, param.Integer) and isinstance(v, (int, float)) and float(v).is_integer():
        return int(v)
    if isinstance(prm, param.Number) and isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _axes(kind: str, cls, given: dict | None, skip: set[str]) -> dict[str, list]:
    """Check one family of swept settings (``TrainConfig`` fields or system parameters):
    known names, non-empty lists, plain values. Ranges are checked per cell by the spec."""
    out: dict[str, list] = {}
    valid = [n for n in cls.param if n != "name" and n not in skip]
    given = given or {}
    for name in given:
        if name not in valid:
            raise ParameterError(f"{kind} has no field {name!r}; valid: {', '.join(valid)}")
    # in the order the class declares them: the same columns however the grid was written
    for name, values in sorted(given.items(), key=lambda kv: valid.index(kv[0])):
        if name not in valid:
            raise ParameterError(f"{kind} has no field {name!r}; valid: {', '.join(valid)}")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ParameterError(f"{name} must be a list of values to sweep, e.g. {name}=[...]; got {values!r}")
        values = list(values)
        if not values:
            raise ParameterError(f"{name}: an empty list; give at least one value")
        plain = [_plain_value(cls.param[name], v) for v in values]
        # a value given twice is one value (lists, e.g. invariants, compared by their JSON)
        out[name] = list({json.dumps(v, sort_keys=True, default=str): v for v in plain}.values())
    return out


def grid(system: str, methods: list[str] | tuple[str, ...] | str, seeds=(0,), config: dict | None = None,
         system_params: dict | None = None, max_work: float | None = None, allow_many: bool = False) -> Grid:
    """The cells of ``methods × seeds × config lists × system_params lists``, validated.

    Args:
        system: a key of ``ALL_SYSTEMS``.
        methods: method keys (a comma string is accepted).
        seeds: the seeds, an iterable of ints.
        config: ``TrainConfig`` field -> list of values (a one-value list fixes it).
        system_params: system parameter -> list of values.
        max_work: the work limit every cell is checked against (None: the default).
        allow_many: allow more than :data:`MAX_CELLS` distinct runs.

    Raises:
        ParameterError: one line naming the bad field, value, range or method; raised
            before any work starts.
    """
    if system not in ALL_SYSTEMS:
        raise ParameterError(f"system must be one of {', '.join(ALL_SYSTEMS)}; got {system!r}")
    keys = [k.strip() for k in methods.split(",")] if isinstance(methods, str) else list(methods)
    keys = list(dict.fromkeys(k for k in keys if k))
    if config and "seed" in config:
        raise ParameterError("give seeds with seeds=[...] (--seeds), not as a config field")
    sys_axes = _axes(f"system {system}", ALL_SYSTEMS[system], system_params, set())
    cfg_axes = _axes("TrainConfig", training.TrainConfig, config, {"seed"})
    # every value against its range on its own, also those a method will not read (a
    # λ < 0 is a mistake even where only the baseline would have run)
    for name, values in sys_axes.items():
        for v in values:
            get_system(system, **{name: tuple(v) if isinstance(v, list) else v})
    for name, values in cfg_axes.items():
        for v in values:
            training.make_config(system, **{name: v})
    seeds = list(seeds) if not isinstance(seeds, int) else [seeds]
    if not seeds:
        raise ParameterError("seeds: an empty list; give at least one seed")
    if not keys:
        raise ParameterError(f"methods: an empty list; valid for {system}: "
                             f"{', '.join(methods_mod.valid_methods(get_system(system)))}")
    for s in seeds:
        lo, hi = training.TrainConfig.param["seed"].bounds
        if isinstance(s, bool) or not isinstance(s, int) or not lo <= s <= hi:
            raise ParameterError(f"seed must be an integer in [{lo}, {hi}]; got {s!r}")
    # the method against the system first (a clear line before any range arithmetic)
    default_sys = get_system(system)
    for k in keys:
        methods_mod.check_applies(k, default_sys)

    sys_names, cfg_names = list(sys_axes), list(cfg_axes)
    requested = len(keys) * len(seeds) * math.prod(len(v) for v in [*sys_axes.values(), *cfg_axes.values()])
    cells: dict[str, Cell] = {}
    for sys_vals in itertools.product(*sys_axes.values()):
        sp = dict(zip(sys_names, sys_vals))
        for method in keys:
            unread = methods_mod.unread_fields(method)
            for cfg_vals in itertools.product(*cfg_axes.values()):
                cfg = {n: v for n, v in zip(cfg_names, cfg_vals) if n not in unread}
                for seed in seeds:
                    spec = runs.RunSpec(system, dict(sp), (method,), {**cfg, "seed": int(seed)}, max_work)
                    key = cell_key(spec)
                    if key in cells:
                        continue  # the same run as a cell already listed (an unread field)
                    values = {"system": system, "method": method, "seed": int(seed),
                              **{n: _cell_value(v) for n, v in sp.items()},
                              **{column_name(n): _cell_value(v) for n, v in cfg.items()}}
                    cells[key] = Cell(spec, values, key)
                if len(cells) > MAX_CELLS and not allow_many:
                    raise ParameterError(
                        f"this grid has more than {MAX_CELLS} distinct runs ({requested} cells); "
                        f"allow it with allow_many=True (conserv sweep --yes) or sweep fewer values")
    out = Grid(cells.values())
    out.requested = requested
    # every cell's ranges, method and work budget, before anything runs
    for c in out:
        try:
            c.spec.validate()
        except ParameterError as err:
            where = ", ".join(f"{k}={v}" for k, v in c.values.items() if k != "system")
            raise ParameterError(f"{err} (cell {where})") from None
    return out


# ---------------------------------------------------------------------------------------
# one cell -> one row (the same function in process and on a worker)
# ---------------------------------------------------------------------------------------
def evaluation_metrics(ev: training.Evaluation | None) -> dict:
    """A row's metrics from a trainer's last :class:`~conserv_core.training.Evaluation`:
    test MSE, violations, final trajectory error, and per invariant ``q`` its final and
    maximum drift in (``drift_<q>``, ``drift_<q>_max``) and out of distribution
    (``drift_<q>_ood``, ``drift_<q>_ood_max``); for a model with a learned conserved
    quantity, its largest drift ``learned_<k>_max`` (``k`` a key of
    ``Evaluation.learned_drift``). All NaN without an evaluation."""
    nan = float("nan")
    if ev is None:
        return {"test_mse": nan, "violation": nan, "violation_ood": nan, "trajectory_error": nan}
    row = {"test_mse": float(ev.test_mse), "violation": float(ev.violation),
           "violation_ood": float(ev.violation_ood),
           "trajectory_error": float(ev.trajectory_error.final) if ev.trajectory_error else nan}
    for q, c in ev.drift.items():
        row[f"drift_{q}"] = float(c.final)
        row[f"drift_{q}_max"] = float(c.largest)
    for q, c in ev.drift_ood.items():
        row[f"drift_{q}_ood"] = float(c.final)
        row[f"drift_{q}_ood_max"] = float(c.largest)
    # a hard model's own conserved quantity (``energy``, ``energy_ood``, ...): what it
    # holds, to read beside the true drift (the claims in :mod:`conserv_core.claims`)
    for k, c in ev.learned_drift.items():
        row[f"learned_{k}_max"] = float(c.largest)
    return row


def run_cell(spec_dict: dict, stop_event: threading.Event | None = None) -> dict:
    """Train one cell's spec and return its row's status and metrics (plain floats and
    strings). Never raises: a cell that cannot be built or fails is an ``error`` row."""
    stop_event = stop_event if stop_event is not None else threading.Event()
    nan = float("nan")
    try:
        spec = runs.RunSpec.from_dict(spec_dict)
        (method,) = spec.methods
        comp = spec.comparison(stop_event=stop_event)
        comp.run()
        tr = comp.trainers[method]
        out = {"status": tr.status, "message": tr.message, "steps": tr.step_count,
               "train_seconds": float(tr.elapsed)}
        out.update(evaluation_metrics(tr.last_eval))
        return out
    except training.Stopped:
        return {"status": "stopped", "message": "stopped before training", "steps": 0, "train_seconds": 0.0,
                **evaluation_metrics(None)}
    except Exception as err:  # a row, not a crash: the sweep goes on
        return {"status": "error", "message": f"{type(err).__name__}: {err}", "steps": 0, "train_seconds": nan,
                **evaluation_metrics(None)}


def _stop_name(sweep_id: str) -> str:
    return f"conserv-sweep-{sweep_id}-stop"


def run_cell_on_worker(spec_dict: dict, sweep_id: str) -> dict:
    """The Dask task of one cell: :func:`run_cell`, ended within a step when the sweep's
    stop event (a ``distributed.Event``) is set. Pure in its spec: a retry after a lost
    worker gives the same row."""
    from distributed import Event, get_client

    # the worker's client, got on the task's thread (the watcher's thread has no task
    # context to find it from)
    stop_remote = Event(_stop_name(sweep_id), client=get_client())
    stop_local, done = threading.Event(), threading.Event()

    def watch():
        while not done.is_set():
            try:
                if stop_remote.wait(timeout=runs.STOP_POLL_S):
                    stop_local.set()
                    return
            except Exception:  # the scheduler went away: end the cell with it
                stop_local.set()
                return

    threading.Thread(target=watch, name=f"stop-{sweep_id}", daemon=True).start()
    try:
        return run_cell(spec_dict, stop_local)
    finally:
        done.set()


# ---------------------------------------------------------------------------------------
# results files
# ---------------------------------------------------------------------------------------
def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def output_path(out: str | os.PathLike) -> tuple[str, str, str]:
    """``(path, format, note)`` that a sweep asked to write ``out`` writes: Parquet for a
    ``.parquet`` path when pyarrow is installed, else CSV (``.parquet`` without pyarrow:
    the same stem with ``.csv``, and a note that says so)."""
    path = os.fspath(out)
    if path.endswith(".parquet"):
        if _has_pyarrow():
            return path, "parquet", ""
        csv_path = path[: -len(".parquet")] + ".csv"
        return csv_path, "csv", f"pyarrow is not installed: writing CSV to {csv_path} instead of Parquet"
    return path, "csv", ""


def read(path: str | os.PathLike):
    """A results file (CSV or Parquet) as a DataFrame, ``cell`` as strings."""
    import pandas

    path = os.fspath(path)
    if path.endswith(".parquet"):
        return pandas.read_parquet(path)
    # an all-digit key must stay a string; messages and statuses too
    return pandas.read_csv(path, dtype={"cell": str, "message": str, "status": str, "method": str,
                                        "system": str}, keep_default_na=True)


def check_out(path: str | os.PathLike, flag: str = "out") -> None:
    """Refuse an output path that is not a regular file or a new path, before any cell runs.

    The writer replaces the file whole (a temporary file renamed over it) whenever the
    header widens, and appends otherwise: over a device node (as root, /dev/null became a
    regular file), a FIFO (the append blocks until someone reads), a symlink (the rename
    replaces the link, not its target) or a folder, either one does harm or loses the rows.
    ``lstat``, not ``stat``: a symlink is refused even where it points at a regular file.

    Raises:
        ParameterError: one line naming ``flag`` and what the path is.
    """
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # a new file: the writer creates it
    except OSError as err:
        raise ParameterError(f"{flag} {path}: cannot be inspected ({err.strerror or err}); "
                             f"give a regular file or a new path") from None
    mode = st.st_mode
    what = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a device node" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else None if stat.S_ISREG(mode) else "not a regular file")
    if what is not None:
        raise ParameterError(f"{flag} {path} is {what}; give a regular file or a new path "
                             f"(the results file is replaced and appended to)")


#: the columns a resumed CSV must have: the writer writes them in every file it starts
REQUIRED_COLUMNS = (*BASE_COLUMNS, *METRIC_COLUMNS)


def _csv_records(data: bytes):
    """``(fields, end)`` for each CSV record of ``data``: its fields and the byte offset just
    past it (a quoted field may hold line breaks, so a record can span several lines)."""
    end = 0

    def lines():
        nonlocal end
        for line in data.splitlines(keepends=True):
            end += len(line)
            yield line.decode("utf-8", errors="replace")

    for fields in csv.reader(lines()):
        yield fields, end


def _check_resume_csv(path: str, data: bytes, flag: str = "out") -> tuple[int | None, str]:
    """Check a CSV results file before a sweep resumes from it: ``(keep, note)``.

    A file cut mid-write (a crash, a full disk, a kill) ends in a partial row: its cell
    did not finish as far as the file knows, so the row is dropped (``keep``: the bytes
    to keep, None for all) and the cell runs again; ``note`` says so. Anything else that
    is wrong, a header without the columns the writer always writes or holding control
    characters, a row in the middle with the wrong number of fields, means the file is
    not one this writer wrote whole: resuming would skip cells on a guess or append rows
    under the wrong columns, so it is refused.

    Raises:
        ParameterError: one line naming ``flag`` and what is wrong, before anything runs.
    """
    records = list(_csv_records(data))
    if not records:
        return None, ""
    header, header_end = records[0]
    bad = sorted({repr(ch) for name in header for ch in name if ord(ch) < 32 or ord(ch) == 127})
    if bad:
        raise ParameterError(f"{flag} {path}: the header holds control characters ({', '.join(bad)}); "
                             f"not a results file --resume can trust")
    if len(records) == 1 and not data.endswith(b"\n"):
        return 0, "the header was cut off (no rows); the file is written again"
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ParameterError(f"{flag} {path}: no {', '.join(missing)} column(s) in the header; "
                             f"--resume needs a results file a sweep wrote")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ParameterError(f"{flag} {path}: the header names {', '.join(dup)} twice; "
                             f"not a results file --resume can trust")
    n, ci = len(header), header.index("cell")
    rows = records[1:]
    for i, (fields, _) in enumerate(rows):
        last = i == len(rows) - 1
        if last and (not data.endswith(b"\n") or len(fields) < n):
            whose = f"cell {fields[ci]}" if ci < len(fields) - 1 else "its cell key cut too"
            return (rows[i - 1][1] if i else header_end), f"dropped a partial last row ({whose}); it reruns"
        if len(fields) != n or not fields[ci]:
            what = f"{len(fields)} fields, the header {n}" if len(fields) != n else "no cell key"
            raise ParameterError(f"{flag} {path}: row {i + 1} has {what}; "
                                 f"not a results file --resume can trust (only a partial last row is dropped)")
    return None, ""


class _Writer:
    """Appends rows to a results file as they arrive, flushed after each one.

    CSV: the header once, then one line per row (a row with a new column rewrites the
    file with the wider header: rare, e.g. a first row without drift columns). Parquet:
    the whole table rewritten to a temporary file and renamed over the old one after
    every row, so a reader never sees half a file.

    A write that fails (a full disk: ``ENOSPC``) is one :class:`ParameterError` line, not a
    traceback, and leaves no temporary file: the rows already in the file stay, a row cut
    by the failure is a partial last row that ``resume`` drops and runs again.
    """

    def __init__(self, path: str, fmt: str, columns: list[str], existing: list[dict]):
        self.path, self.fmt = path, fmt
        self.columns = list(columns)
        self.rows = list(existing)
        for r in existing:
            self._widen(r)
        self._fh = None
        if fmt == "csv":
            with self._writing():
                fresh = not os.path.exists(path) or os.path.getsize(path) == 0
                if fresh or self._header() != self.columns:
                    self._rewrite_csv()
                else:
                    self._cut_partial_last_row()
                self._open_append()

    def _cut_partial_last_row(self) -> None:
        """Appending to a file that ends mid-row (a sweep cut off, run again without
        ``resume``) would glue the first new row onto the partial one: cut it first. A
        resumed file had this done, and said, by :func:`_existing_rows`."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        if data.endswith(b"\n"):
            return
        ends = [end for _, end in _csv_records(data)]
        os.truncate(self.path, ends[-2] if len(ends) > 1 else 0)

    @contextmanager
    def _writing(self, tmp: str | None = None):
        """Turn an ``OSError`` while writing into one line naming ``out``; remove ``tmp``."""
        try:
            yield
        except OSError as err:
            if tmp is not None:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
            self._abandon()
            raise ParameterError(f"out {self.path}: writing failed ({err.strerror or err}); the rows "
                                 f"already in it are kept, resume runs the rest") from None

    def _abandon(self) -> None:
        """Drop the open handle without flushing it again (its flush is what failed)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass

    def _open_append(self) -> None:
        self._fh = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._fh, fieldnames=self.columns, restval="")

    def _header(self) -> list[str]:
        with open(self.path, newline="") as fh:
            return next(csv.reader(fh), [])

    def _widen(self, row: dict) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns.extend(new)
        return bool(new)

    def _rewrite_csv(self) -> None:
        tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
        with self._writing(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self.columns, restval="")
                w.writeheader()
                for r in self.rows:
                    w.writerow(_csv_row(r))
            os.replace(tmp, self.path)

    def append(self, row: dict) -> None:
        self.rows.append(row)
        wider = self._widen(row)
        if self.fmt == "parquet":
            import pandas

            tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
            with self._writing(tmp):
                pandas.DataFrame(self.rows, columns=self.columns).to_parquet(tmp, index=False)
                os.replace(tmp, self.path)
            return
        if wider:
            self._abandon()
            self._rewrite_csv()
            with self._writing():
                self._open_append()
        else:
            with self._writing():
                self._csv.writerow(_csv_row(row))
                self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            with self._writing():
                fh, self._fh = self._fh, None
                fh.close()


def _csv_row(row: dict) -> dict:
    # repr round-trips a float exactly (bit-identical metrics survive the file); NaN is
    # written empty, as a missing field
    return {k: ("" if isinstance(v, float) and math.isnan(v) else repr(v) if isinstance(v, float) else v)
            for k, v in row.items()}


def _read_bytes(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise ParameterError(f"{flag} {path}: cannot read it to resume ({err.strerror or err})") from None


def check_resume(path: str | os.PathLike, fmt: str = "csv", flag: str = "out") -> str:
    """Check the results file a sweep would resume, changing nothing: what resuming would
    change in it (e.g. drop a partial last row), or ``""``. The CLI calls it before it
    builds the grid, so a file that cannot be trusted is one line before anything else;
    :func:`run` checks again when it resumes (the file may have changed in between).

    Raises:
        ParameterError: a CSV that cannot be trusted (see :func:`_check_resume_csv`).
    """
    path = os.fspath(path)
    if fmt != "csv" or not os.path.exists(path) or os.path.getsize(path) == 0:
        return ""
    return _check_resume_csv(path, _read_bytes(path, flag), flag)[1]


def _existing_rows(path: str, fmt: str = "csv") -> tuple[list[dict], str]:
    """The rows a resumed sweep keeps from ``path``, and a note of what it changed there.

    A CSV is checked first (:func:`_check_resume_csv`); a partial last row is cut off the
    file itself, so the next row starts on a line of its own instead of being glued to the
    partial one. A Parquet file is written whole (renamed into place), so it is read as is.
    """
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return [], ""
    note = ""
    if fmt == "csv":
        keep, note = _check_resume_csv(path, _read_bytes(path, "out"))
        if keep is not None:
            try:
                os.truncate(path, keep)
            except OSError as err:
                raise ParameterError(f"out {path}: cannot cut its partial last row ({err.strerror or err})") from None
            if keep == 0:
                return [], note
    try:
        df = read(path)
    except Exception as err:  # a file pandas cannot parse: one line, not a traceback
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ParameterError(f"out {path}: cannot read it to resume ({first})") from None
    if "cell" not in df.columns:
        raise ParameterError(f"out {path}: no cell column; --resume needs a results file a sweep wrote")
    return df.to_dict("records"), note


# ---------------------------------------------------------------------------------------
# running a sweep
# ---------------------------------------------------------------------------------------
@dataclass
class Status:
    """Where a sweep stands, handed to ``on_progress`` at the start and after each row."""

    total: int  # cells this call runs (resumed ones not counted)
    done: int  # rows with status done
    failed: int  # rows diverged, error or stopped
    skipped: int  # cells already in the results file (resume)
    dashboard_link: str = ""
    path: str | None = None
    format: str | None = None
    note: str = ""
    #: what resume changed in the file before running, e.g. a partial last row it dropped
    #: (that cell runs again); empty when nothing
    repaired: str = ""

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed


def _row(cell: Cell, result: dict) -> dict:
    return {"cell": cell.key, **cell.values, **result}


def _columns(cells: list[Cell]) -> list[str]:
    """The header a sweep's file starts with: base, swept fields, metrics, and the drift
    columns of the system's invariants (ODE systems; a field system's come with its rows)."""
    cols = list(BASE_COLUMNS)
    for c in cells:
        cols.extend(k for k in c.values if k not in cols)
    cols.extend(METRIC_COLUMNS)
    if cells:
        sysm = get_system(cells[0].spec.system, **{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in cells[0].spec.system_params.items()})
        if sysm.kind == "ode":
            for q in sysm.invariant_names():
                cols.extend([f"drift_{q}", f"drift_{q}_max", f"drift_{q}_ood", f"drift_{q}_ood_max"])
    return cols


def _stopped_result() -> dict:
    return {"status": "stopped", "message": "stopped before it ran", "steps": 0, "train_seconds": 0.0,
            **evaluation_metrics(None)}


def run(cells: list[Cell], *, client=None, scheduler: str | None = None, workers: int | None = None,
        out: str | os.PathLike | None = None, resume: bool = False, on_row: Callable[[dict], None] | None = None,
        stop_event: threading.Event | None = None, priority: int = PRIORITY,
        on_progress: Callable[[Status], None] | None = None):
    """Carry out ``cells``; return one row per cell as a pandas DataFrame (grid order).

    Args:
        cells: from :func:`grid`.
        client: a ``distributed.Client`` to run on (the dashboard's own); not closed here.
        scheduler: a scheduler's address, e.g. ``tcp://10.0.0.5:8786``.
        workers: with neither: 0 or None runs in this process, one cell after another; N
            starts a ``LocalCluster`` of N worker processes (one thread, one torch thread
            each), closed at the end.
        out: the results file, appended to as each row arrives (see :func:`output_path`).
        resume: skip the cells whose key already has a row in ``out`` (not a ``stopped``
            one); their rows come back in the DataFrame as read. The file is checked first:
            a partial last row (a write cut off) is dropped and its cell runs again
            (:attr:`Status.repaired` says so, and stderr where there is no ``on_progress``);
            a file it cannot trust is refused with a :class:`ParameterError` line.
        on_row: called with each new row (a dict) as it completes, in this thread.
        stop_event: set it (from any thread) to end the sweep: running cells stop within a
            step, queued ones do not start; their rows say ``stopped`` and are not written.
        priority: Dask priority of the first cell's task (the k-th gets ``priority - k``).
        on_progress: called with a :class:`Status` at the start and after every row.

    Raises:
        ParameterError: ``out`` is not a regular file or a new path, a resumed file cannot
            be trusted (both before any cell runs), or writing it failed (a full disk).
    """
    import pandas

    cells = list({c.key: c for c in cells}.values())
    stop_event = stop_event if stop_event is not None else threading.Event()
    path = fmt = None
    note = ""
    existing: list[dict] = []
    repaired = ""
    if out is not None:
        path, fmt, note = output_path(out)
        check_out(path)
        if resume:
            found, repaired = _existing_rows(path, fmt)
            existing = [r for r in found if str(r.get("status")) != "stopped"]
    have = {str(r["cell"]) for r in existing}
    keep = {c.key for c in cells}
    todo = [c for c in cells if c.key not in have]
    writer = _Writer(path, fmt, _columns(cells), existing) if path else None
    rows: dict[str, dict] = {str(r["cell"]): r for r in existing if str(r["cell"]) in keep}
    status = Status(total=len(todo), done=0, failed=0, skipped=len(cells) - len(todo), path=path, format=fmt,
                    note=note, repaired=repaired)
    if repaired and on_progress is None:  # said once, where a caller without a progress hook sees it
        sys.stderr.write(f"sweep: {path}: {repaired}\n")

    def finish(cell: Cell, result: dict) -> None:
        row = _row(cell, result)
        rows[cell.key] = row
        if writer is not None and row["status"] != "stopped":
            writer.append(row)
        if row["status"] == "done":
            status.done += 1
        else:
            status.failed += 1
        if on_row is not None:
            on_row(row)
        if on_progress is not None:
            on_progress(status)

    try:
        if client is None and scheduler is None and not workers:
            if on_progress is not None:
                on_progress(status)
            for c in todo:
                finish(c, _stopped_result() if stop_event.is_set() else run_cell(c.spec.to_dict(), stop_event))
        else:
            _run_dask(todo, client, scheduler, workers, finish, stop_event, priority, status, on_progress)
    finally:
        if writer is not None:
            writer.close()
    ordered = [rows[c.key] for c in cells if c.key in rows]
    # the file's column order (a field system's drift columns come with its rows)
    columns = writer.columns if writer is not None else _columns(cells)
    columns = list(dict.fromkeys([*columns, *(k for r in ordered for k in r)]))
    frame = pandas.DataFrame(ordered, columns=columns)
    frame.attrs.update(path=path, format=fmt, note=note, repaired=repaired, dashboard_link=status.dashboard_link)
    return frame


def _run_dask(todo, client, scheduler, workers, finish, stop_event, priority, status, on_progress) -> None:
    from distributed import Client, Event, as_completed

    own_cluster = own_client = None
    if client is None:
        if scheduler is not None:
            client = own_client = Client(scheduler, timeout=30)
        else:
            own_cluster = runs.local_cluster(int(workers), dashboard_address="127.0.0.1:0")
            client = own_client = Client(own_cluster)
    try:
        try:
            status.dashboard_link = client.dashboard_link or ""
        except Exception:
            status.dashboard_link = ""
        client.register_plugin(runs.WorkerSetup(1, plugins.loaded()))
        try:  # one task per worker thread: a queued sweep task never sits in a worker's own queue
            client.run_on_scheduler(runs._one_task_per_thread)
        except Exception:  # a scheduler that refuses run_on_scheduler keeps Dask's default
            pass
        if on_progress is not None:
            on_progress(status)
        sweep_id = uuid.uuid4().hex[:12]
        futures = {}
        for i, c in enumerate(todo):
            fut = runs._submit_queued(client, run_cell_on_worker, c.spec.to_dict(), sweep_id,
                                      key=f"conserv-sweep-{sweep_id}-{c.key}", priority=priority - i)
            futures[fut] = c
        stop_remote = Event(_stop_name(sweep_id), client=client)
        finished = threading.Event()

        def watch_stop():
            while not finished.is_set():
                if stop_event.wait(0.2):
                    try:
                        stop_remote.set()  # running cells end within a step
                        client.cancel([f for f in futures if not f.done()])  # queued ones never start
                    except Exception:
                        pass
                    return

        watcher = threading.Thread(target=watch_stop, name=f"sweep-stop-{sweep_id}", daemon=True)
        watcher.start()
        try:
            for fut in as_completed(list(futures)):
                c = futures[fut]
                if fut.status == "cancelled":
                    finish(c, _stopped_result())
                elif fut.status == "error":
                    err = fut.exception()
                    name = type(err).__name__
                    msg = ("the worker processes running this cell kept dying" if name == "KilledWorker"
                           else f"{name}: {err}")
                    finish(c, {"status": "error", "message": msg, "steps": 0, "train_seconds": float("nan"),
                               **evaluation_metrics(None)})
                else:
                    finish(c, fut.result())
                fut.release()
        finally:
            finished.set()
            try:
                stop_remote.clear()
            except Exception:
                pass
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


# ---------------------------------------------------------------------------------------
# the notebook call
# ---------------------------------------------------------------------------------------
def sweep(system: str, methods, seeds=(0,), out=None, scheduler: str | None = None, workers: int = 0,
          client=None, resume: bool = False, max_work: float | None = None, allow_many: bool = False, **axes):
    """A sweep in one call: ``axes`` are ``TrainConfig`` fields or system parameters, each
    a list of values (a single value fixes it). Returns the rows as a DataFrame.

        df = conserv_core.sweep("pendulum", ["baseline", "penalty"], seeds=range(3),
                                lam=[0.1, 1, 10], steps=[300], workers=2)
    """
    sys_cls = ALL_SYSTEMS.get(system)
    config, sys_params = {}, {}
    for name, values in axes.items():
        values = list(values) if isinstance(values, (list, tuple, range)) else [values]
        if name in training.TrainConfig.param:
            config[name] = values
        elif sys_cls is not None and name in sys_cls.param:
            sys_params[name] = values
        else:
            valid = [n for n in training.TrainConfig.param if n not in ("name", "seed")]
            valid += [n for n in (sys_cls.param if sys_cls else []) if n != "name"]
            raise ParameterError(f"{name!r} is neither a TrainConfig field nor a parameter of {system}; "
                                 f"valid: {', '.join(valid)}")
    cells = grid(system, methods, seeds=seeds, config=config, system_params=sys_params, max_work=max_work,
                 allow_many=allow_many)
    return run(cells, client=client, scheduler=scheduler, workers=workers, out=out, resume=resume)


__all__ = ["Cell", "Grid", "MAX_CELLS", "PRIORITY", "Status", "cell_key", "check_out", "check_resume",
           "evaluation_metrics", "grid", "output_path", "read", "run", "run_cell", "run_cell_on_worker", "sweep"]
