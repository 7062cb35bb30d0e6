"""The ``conserv`` command (also ``python -m conserv_core``).

    conserv systems                      list systems, their parameters and ranges
    conserv methods [--system S]         list methods (and which apply to S)
    conserv run --system S --method M    train one method, print its summary
    conserv compare --system S --methods a,b,c
    conserv sweep --system S --methods a,b --lam 0.1,1,10 --seeds 0-4 --out results.csv
    conserv serve                        start the dashboard (``python -m app``)

Training options are generated from :class:`conserv_core.training.TrainConfig`, so the
CLI, the dashboard and the notebooks share one declaration of every knob and its range.
System parameters are given as ``--param name=value`` (repeatable). Bad input exits with
status 2 and a one-line reason on stderr; never a traceback. Everything that can be
checked without training is checked before it starts (the output paths of ``--json`` and
``--save``, the run's work against :mod:`conserv_core.budget`), so no run is lost to a
typo at its end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time

import param

from conserv_core import budget, methods, plugins, runs, training
from conserv_core.systems import ALL_SYSTEMS, ParameterError, describe_range, get_system
from conserv_core.presets import PRESETS, get_preset

_CONFIG_SKIP = {"name", "invariants"}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise UsageError(message)


def _parse_value(p: param.Parameter, text: str):
    if isinstance(p, param.Boolean):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(p, param.Integer):
        return int(text)
    if isinstance(p, param.Number):
        return float(text)
    if isinstance(p, param.Range):
        lo, hi = text.split(",")
        return (float(lo), float(hi))
    if isinstance(p, param.List):
        return [float(v) for v in text.split(",") if v]
    return text


def _system_params(key: str, pairs: list[str]) -> dict:
    if key not in ALL_SYSTEMS:
        raise ParameterError(f"system must be one of {', '.join(ALL_SYSTEMS)}; got {key!r}")
    cls = ALL_SYSTEMS[key]
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ParameterError(f"--param expects name=value, got {pair!r}")
        name, text = pair.split("=", 1)
        if name not in cls.param or name == "name":
            valid = ", ".join(n for n in cls.param if n != "name")
            raise ParameterError(f"{key} has no parameter {name!r}; valid: {valid}")
        try:
            out[name] = _parse_value(cls.param[name], text)
        except ValueError:
            raise ParameterError(f"{key}.{name} must be a number in {describe_range(cls, name)}; got {text!r}") from None
    return out


def _add_config_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (TrainConfig)")
    for name, prm in training.TrainConfig.param.objects("existing").items():
        if name in _CONFIG_SKIP:
            continue
        flag = "--" + name.replace("_", "-")
        rng = describe_range(training.TrainConfig, name)
        helptext = f"{prm.doc or ''} {rng}".strip()
        if isinstance(prm, param.Boolean):
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=prm.doc)
        elif isinstance(prm, param.Selector):
            g.add_argument(flag, dest=name, choices=prm.objects, default=None, help=prm.doc)
        elif isinstance(prm, param.Integer):
            g.add_argument(flag, dest=name, type=int, default=None, help=helptext)
        elif isinstance(prm, param.Number):
            g.add_argument(flag, dest=name, type=float, default=None, help=helptext)
    g.add_argument("--invariants", default=None,
                   help="comma-separated invariants for the soft constraints (default: all conserved ones)")


def _common(p: argparse.ArgumentParser, methods_flag: str) -> None:
    p.add_argument("--system", help=f"one of: {', '.join(ALL_SYSTEMS)}")
    if methods_flag == "method":
        p.add_argument("--method", help=f"one of: {', '.join(methods.ALL_METHODS)}")
    else:
        p.add_argument("--methods", default=None,
                       help="comma-separated methods (default: every method valid for the system)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a system parameter, e.g. --param damping=0.1 (repeatable)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named experiment (sets system, methods, options)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--save", metavar="PATH", help="save the trained weights (run only) as a checkpoint")
    p.add_argument("--max-work", type=float, default=None, metavar="N",
                   help=f"refuse a run estimated above N state-steps (default ${budget.ENV_VAR} "
                        f"or {budget.DEFAULT_MAX_WORK:.0e})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--rollout-bodies", type=int, default=None, metavar="M",
                   help="nbody: also roll the trained models out on M bodies (2-64) without retraining, "
                        "for methods whose model runs on any number of bodies (shnn)")
    _add_config_options(p)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="conserv", description="Conservation Lab: train neural networks that respect "
                "(or ignore) conservation laws and compare their drift.",
                epilog="--plugin MODULE_OR_FILE.py (before or after the command, repeatable) loads your own "
                       f"methods and systems first; so does ${plugins.ENV}.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("systems", help="list systems with their parameters and ranges")
    m = sub.add_parser("methods", help="list methods")
    m.add_argument("--system", help="only the methods valid for this system")
    r = sub.add_parser("run", help="train one method and report its drift")
    _common(r, "method")
    c = sub.add_parser("compare", help="train several methods side by side; print a table")
    _common(c, "methods")
    w = sub.add_parser("sweep", help="a grid of runs (methods × seeds × any setting) on Dask, one row per run")
    _add_sweep_options(w)
    # listed for the help only: main() hands `serve ...` to the app's own parser
    sub.add_parser("serve", help="start the dashboard, training on a Dask cluster (conserv serve --help)")
    return p


# ---------------------------------------------------------------------------------------
def _cmd_systems(out) -> None:
    for key, cls in ALL_SYSTEMS.items():
        out.write(f"{key:<16} {cls.title}\n")
        for name, prm in cls.param.objects("existing").items():
            if name == "name":
                continue
            out.write(f"    {name:<14} {str(getattr(cls, name)):<14} {describe_range(cls, name):<26} {prm.doc or ''}\n")


def _cmd_methods(args, out) -> None:
    sysm = get_system(args.system) if args.system else None
    for key, m in methods.ALL_METHODS.items():
        if sysm is not None and not methods.applies(m, sysm):
            continue
        valid = [k for k in ALL_SYSTEMS if methods.applies(m, get_system(k))]
        out.write(f"{key:<10} {m.kind:<6} {m.title:<32} systems: {', '.join(valid)}\n")
    out.write("\nrollout options (exact in discrete time; any trained model, no retraining):\n")
    for o in methods.ROLLOUT_OPTIONS.values():
        out.write(f"{o.setting:<32} {o.title}; applies to {o.applies_to}\n")


class _ProgressBar:
    """Progress on stderr. On a terminal, tqdm's bar over every method's steps with each
    method's rate; elsewhere (a log file, CI) a line per tenth of the work, since tqdm
    redraws with carriage returns that a log keeps. A method's end gets a line of its own."""

    def __init__(self, total: int, stream=sys.stderr, enabled: bool = True):
        from tqdm import tqdm

        self.stream, self.total = stream, max(total, 1)
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=total, file=stream, disable=not (enabled and tty), unit="step", dynamic_ncols=True,
                        mininterval=0.1)
        self.lines = enabled and not tty
        self.done: dict[str, int] = {}
        self.rate: dict[str, float] = {}
        self.last_tenth = 0

    def __call__(self, rec) -> None:
        if isinstance(rec, training.Progress):
            delta = rec.step - self.done.get(rec.method, 0)
            self.done[rec.method], self.rate[rec.method] = rec.step, rec.steps_per_s
            if not self.bar.disable:
                self.bar.set_postfix_str(" ".join(f"{k}:{v:.0f}/s" for k, v in self.rate.items()), refresh=False)
                self.bar.update(delta)
            tenth = 10 * sum(self.done.values()) // self.total
            if self.lines and tenth > self.last_tenth:
                self.stream.write(f"{10 * tenth}%\n")
                self.last_tenth = tenth
        elif isinstance(rec, training.Finished):
            line = f"{rec.method}: {rec.status}: {rec.message}"
            if not self.bar.disable:
                self.bar.write(line, file=self.stream)
            elif self.lines:
                self.stream.write(line + "\n")

    def close(self) -> None:
        self.bar.close()


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.2e}"


def _results(comp: training.Comparison, truth: training.Evaluation | None) -> dict:
    rows = [training.method_summary(key, tr.status, tr.message, tr.elapsed, tr.step_count, tr.last_eval)
            for key, tr in comp.trainers.items()]
    return training.comparison_summary(comp.system, comp.config, truth, rows)


def _peak(curve: dict | None) -> str:
    """A curve's cell: its largest value over the horizon, then its value at the horizon."""
    if not curve:
        return "-"
    return f"{_fmt(curve.get('max'))} ({_fmt(curve.get('final'))})"


_PEAK_NOTE = ("max over the horizon (value at the horizon): a curve can cross zero at its end, so methods "
              "are ranked by the max")


def _table(res: dict, out) -> None:
    quantities = []
    for m in res["methods"]:
        for q in m["drift"]:
            if q not in quantities:
                quantities.append(q)
    traj = any(m.get("trajectory_error") for m in res["methods"])
    head = f"{'method':<10} {'status':<9} {'steps':>6} {'train s':>8} {'test mse':>9}"
    head += "".join(f" {('drift ' + q)[:19]:>19}" for q in quantities)
    head += f" {'traj. error':>19}" if traj else ""
    head += f" {'violation':>10} {'viol. OOD':>10}"
    out.write(head + "\n")
    if res["truth"]:
        row = f"{'truth':<10} {'-':<9} {'-':>6} {'-':>8} {'-':>9}"
        row += "".join(f" {_peak(res['truth'].get(q)):>19}" for q in quantities)
        row += f" {'-':>19}" if traj else ""
        out.write(row + "\n")
    for m in res["methods"]:
        row = f"{m['method']:<10} {m['status']:<9} {m['steps']:>6} {m['train_seconds']:>8.1f} {_fmt(m['test_mse']):>9}"
        row += "".join(f" {_peak(m['drift'].get(q)):>19}" for q in quantities)
        row += f" {_peak(m.get('trajectory_error')):>19}" if traj else ""
        row += f" {_fmt(m.get('violation')):>10} {_fmt(m.get('violation_ood')):>10}"
        out.write(row + "\n")
    out.write(f"drift = |Q(t) - Q(0)| / |Q(0)| averaged over the test set (a quantity the system does not conserve: "
              f"|Q(t) - Q_true(t)| / |Q(0)|), {_PEAK_NOTE}; "
              + ("traj. error = |z(t) - z_true(t)| / rms|z_true|; " if traj else "")
              + "violation = rms of the normalised constraint residual (in / out of distribution)\n")


def _on_bodies(comp: training.Comparison, keys: list[str], n_bodies: int, out) -> dict:
    """The trained models ``keys`` rolled out on ``n_bodies`` bodies, printed as a table
    (largest and final drift and trajectory error, with the truth's floor), and returned for the JSON."""
    res: dict = {"n_bodies": n_bodies, "trained_on": comp.system.n_bodies, "truth": {}, "methods": {}}
    for k in keys:
        tr = comp.trainers[k]
        if tr.status != "done":
            continue
        ev, truth = training.on_bodies(tr, n_bodies)
        res["truth"] = {q: c.to_dict() for q, c in truth.drift.items()}
        res["methods"][k] = {"drift": {q: c.to_dict() for q, c in ev.drift.items()},
                             "trajectory_error": ev.trajectory_error.to_dict() if ev.trajectory_error else None,
                             "test_mse": ev.test_mse}
    if not res["methods"]:
        return res
    quantities = list(next(iter(res["methods"].values()))["drift"])
    out.write(f"\nrolled out on {n_bodies} bodies (trained on {comp.system.n_bodies}), the same weights:\n")
    out.write(f"{'method':<10}" + "".join(f" {('drift ' + q)[:19]:>19}" for q in quantities)
              + f" {'traj. error':>19} {'test mse':>9}\n")
    out.write(f"{'truth':<10}" + "".join(f" {_peak(res['truth'].get(q)):>19}" for q in quantities)
              + f" {'-':>19} {'-':>9}\n")
    for k, m in res["methods"].items():
        out.write(f"{k:<10}" + "".join(f" {_peak(m['drift'][q]):>19}" for q in quantities)
                  + f" {_peak(m['trajectory_error']):>19} {_fmt(m['test_mse']):>9}\n")
    out.write(_PEAK_NOTE + "\n")
    return res


def _config_from_args(args, system_key: str, base: dict) -> training.TrainConfig:
    values = dict(base)
    for name in training.TrainConfig.param:
        if name in _CONFIG_SKIP:
            continue
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    if args.invariants:
        values["invariants"] = [s.strip() for s in args.invariants.split(",") if s.strip()]
    return training.make_config(system_key, **values)


def _check_writable(flag: str, path: str) -> None:
    """Refuse an output path that cannot be written, before training: the results would
    otherwise be computed and then lost to a traceback.

    Opening for append is the test (``os.access`` says yes to root everywhere, /proc
    included); it changes no existing file, and a file it creates is removed again.
    """
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise UsageError(f"{flag} {path}: is a folder; give a file path inside it")
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: folder {parent} does not exist")
    existed = os.path.exists(full)
    try:
        with open(full, "a"):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot write there ({err.strerror or err})") from None
    if not existed:
        os.remove(full)


def _cmd_train(args, out) -> int:
    for flag, path in (("--json", args.json), ("--save", args.save)):
        if path is not None:
            _check_writable(flag, path)
    preset = get_preset(args.preset) if args.preset else None
    system_key = args.system or (preset.system if preset else None)
    if not system_key:
        raise UsageError("--system is required (or --preset); systems: " + ", ".join(ALL_SYSTEMS))
    sys_params = dict(preset.system_params) if preset and system_key == preset.system else {}
    sys_params.update(_system_params(system_key, args.param))
    sysm = get_system(system_key, **sys_params)
    if args.command == "run":
        keys = [args.method] if args.method else (list(preset.methods[-1:]) if preset else [])
        if not keys:
            raise UsageError("--method is required; valid for " + system_key + ": "
                             + ", ".join(methods.valid_methods(sysm)))
    else:
        if args.methods:
            keys = [k.strip() for k in args.methods.split(",") if k.strip()]
        elif preset:
            keys = list(preset.methods)
        else:
            keys = methods.valid_methods(sysm)
    cfg = _config_from_args(args, system_key, dict(preset.config) if preset else {})
    # the same plain description the dashboard and the workers run from, checked once in
    # full (a bad method named first, the work budget last) before anything is built
    spec = runs.RunSpec.of(sysm, keys, cfg, max_work=args.max_work)
    plan = spec.plan()
    movable = training.check_on_bodies(sysm, keys, args.rollout_bodies) if args.rollout_bodies is not None else []
    bar = _ProgressBar(cfg.steps * len(keys), enabled=not args.quiet)
    truth_box = []

    def listen(rec):
        if isinstance(rec, training.Evaluation) and rec.method == "truth":
            truth_box.append(rec)
        bar(rec)

    comp = spec.comparison(listener=listen, plan=plan)
    try:
        comp.run()
    except KeyboardInterrupt:
        comp.stop()
        sys.stderr.write("interrupted; reporting what was computed\n")
    finally:
        bar.close()
    res = _results(comp, truth_box[0] if truth_box else None)
    _table(res, out)
    if movable:
        res["on_bodies"] = _on_bodies(comp, movable, args.rollout_bodies, out)
    try:  # checked before training, but the disk may fill or the folder go meanwhile
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(res, fh, indent=1, allow_nan=False, default=_json_default)
        if args.save:
            next(iter(comp.trainers.values())).save(args.save)
    except OSError as err:
        sys.stderr.write(f"conserv: error: could not write the results: {err}\n")
        return 1
    bad = [m for m in res["methods"] if m["status"] in ("diverged", "error")]
    for m in bad:
        sys.stderr.write(f"conserv: {m['method']} {m['status']}: {m['message']}\n")
    return 1 if bad else 0


def _json_default(o):
    if isinstance(o, float):
        return None
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(type(o).__name__)


# -- sweep --------------------------------------------------------------------------------
def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", help=f"one of: {', '.join(ALL_SYSTEMS)}")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: every method valid for the system)")
    p.add_argument("--seeds", default="0", help="seeds as a list and ranges, e.g. 0-9 or 0,3,5-7 (default 0)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2",
                   help="a system parameter and its values, e.g. --param damping=0,0.1 (repeatable; a range "
                        "parameter's pairs are separated by ';', e.g. energy_band='0.1,0.5;0.2,0.8')")
    p.add_argument("--out", metavar="PATH", help="the results file, one row per run as it finishes "
                   "(.parquet with pyarrow installed, else CSV)")
    p.add_argument("--resume", action="store_true", help="skip the cells that already have a row in --out")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="a LocalCluster of N worker processes, one thread each (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    where.add_argument("--in-process", action="store_true", help="no cluster: the runs one after another here")
    p.add_argument("--yes", action="store_true", help=f"allow more than {_max_cells()} distinct runs")
    p.add_argument("--max-work", type=float, default=None, metavar="N",
                   help=f"refuse a cell estimated above N state-steps (default ${budget.ENV_VAR} "
                        f"or {budget.DEFAULT_MAX_WORK:.0e})")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    g = p.add_argument_group("training (TrainConfig): each flag takes one value or a comma list to sweep")
    for name, prm in training.TrainConfig.param.objects("existing").items():
        if name in _CONFIG_SKIP or name == "seed":
            continue
        kind = ("|".join(map(str, prm.objects)) if isinstance(prm, param.Selector)
                else "true,false" if isinstance(prm, param.Boolean) else describe_range(training.TrainConfig, name))
        g.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="V1,V2",
                       help=f"{prm.doc or ''} {kind}".strip())
    g.add_argument("--invariants", default=None,
                   help="comma-separated invariants for the soft constraints, the same for every cell")


def _max_cells() -> int:
    from conserv_core import sweeps

    return sweeps.MAX_CELLS


def _parse_seeds(text: str) -> list[int]:
    """``0-9``, ``0,3,5-7``: a list of seeds (ranges inclusive), in the order given."""
    out: list[int] = []
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0],
                                                                              part[1:].split("-", 1)[1])
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise UsageError(f"--seeds: the range {part!r} runs backwards")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UsageError(f"--seeds takes integers and ranges, e.g. 0-9 or 0,3,5-7; got {part!r}") from None
    if not out:
        raise UsageError("--seeds: an empty list; give at least one seed, e.g. --seeds 0-4")
    return list(dict.fromkeys(out))


def _sweep_values(owner: str, prm: param.Parameter, name: str, text: str) -> list:
    """A flag's comma list as typed values (a range parameter's pairs split on ';')."""
    parts = text.split(";") if isinstance(prm, param.Range) else text.split(",")
    values = []
    for t in (t.strip() for t in parts):
        if not t:
            continue
        if t.lower() == "none" and getattr(prm, "allow_None", False):
            values.append(None)
            continue
        try:
            values.append(_parse_value(prm, t))
        except ValueError:
            raise ParameterError(f"{owner}{name} takes values in {describe_range(_owner_cls(prm), name)}; "
                                 f"got {t!r}") from None
    if not values:
        raise ParameterError(f"{owner}{name}: an empty list; give at least one value")
    return values


def _owner_cls(prm: param.Parameter):
    owner = prm.owner
    return owner if isinstance(owner, type) else type(owner)


def _cmd_sweep(args, out) -> int:
    from conserv_core import sweeps

    if not args.system:
        raise UsageError("--system is required; systems: " + ", ".join(ALL_SYSTEMS))
    if args.system not in ALL_SYSTEMS:
        raise ParameterError(f"system must be one of {', '.join(ALL_SYSTEMS)}; got {args.system!r}")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out, the results file to resume")
    path = note = None
    if args.out:  # checked before the grid is built, let alone run
        path, fmt, note = sweeps.output_path(args.out)
        # first: opening a FIFO to test it would block, and a device node or a symlink
        # passes that test but the writer would replace it
        sweeps.check_out(path, "--out")
        _check_writable("--out", path)
        if args.resume:  # a file --resume cannot trust: one line before anything is printed
            sweeps.check_resume(path, fmt, "--out")
    cls = ALL_SYSTEMS[args.system]
    system_params: dict[str, list] = {}
    for pair in args.param:
        if "=" not in pair:
            raise ParameterError(f"--param expects name=v1,v2, got {pair!r}")
        name, text = pair.split("=", 1)
        if name not in cls.param or name == "name":
            valid = ", ".join(n for n in cls.param if n != "name")
            raise ParameterError(f"{args.system} has no parameter {name!r}; valid: {valid}")
        system_params[name] = _sweep_values(f"{args.system}.", cls.param[name], name, text)
    config: dict[str, list] = {}
    for name, prm in training.TrainConfig.param.objects("existing").items():
        text = getattr(args, name, None)
        if name in _CONFIG_SKIP or name == "seed" or text is None:
            continue
        config[name] = _sweep_values("", prm, name, text)
    if args.invariants:
        config["invariants"] = [[s.strip() for s in args.invariants.split(",") if s.strip()]]
    keys = ([k.strip() for k in args.methods.split(",") if k.strip()] if args.methods is not None
            else methods.valid_methods(get_system(args.system)))
    cells = sweeps.grid(args.system, keys, seeds=_parse_seeds(args.seeds), config=config,
                        system_params=system_params, max_work=args.max_work, allow_many=args.yes)
    if args.in_process:
        where, workers = "in this process, one after another", 0
    elif args.scheduler:
        where, workers = f"on {args.scheduler}", None
    else:
        workers = args.workers if args.workers is not None else max(1, os.cpu_count() or 1)
        if workers < 1:
            raise UsageError(f"--workers must be at least 1 (or --in-process); got {workers}")
        where = f"on a LocalCluster of {workers} worker process(es)"
    sys.stderr.write(f"sweep: {cells.describe()}, {where}\n")
    if note:
        sys.stderr.write(f"sweep: {note}\n")
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    shown = {"link": False, "repaired": False}

    def progress(st) -> None:
        if st.repaired and not shown["repaired"]:  # even with --quiet: the file was changed
            sys.stderr.write(f"sweep: {st.path}: {st.repaired}\n")
            shown["repaired"] = True
        if st.dashboard_link and not shown["link"]:
            sys.stderr.write(f"sweep: Dask dashboard {st.dashboard_link}\n")
            shown["link"] = True
        if args.quiet:
            return
        line = f"sweep: {st.done} done, {st.failed} failed, {st.remaining} remaining"
        line += f" ({st.skipped} already in the file)" if st.skipped else ""
        sys.stderr.write(("\r" + line + "   ") if tty else line + "\n")
        if tty and st.remaining == 0:
            sys.stderr.write("\n")
        sys.stderr.flush()

    stop = threading.Event()
    t0 = time.perf_counter()
    try:
        frame = sweeps.run(cells, scheduler=args.scheduler, workers=workers, out=args.out, resume=args.resume,
                           stop_event=stop, on_progress=progress)
    except KeyboardInterrupt:
        stop.set()
        sys.stderr.write(f"\nsweep: interrupted; every finished row is in {path} (--resume runs the rest)\n"
                         if path else "\nsweep: interrupted\n")
        return 130
    wall = time.perf_counter() - t0
    _sweep_table(frame, out)
    if path:
        out.write(f"{len(frame)} rows in {path} ({frame.attrs.get('format')}), {wall:.1f} s wall\n")
    else:
        out.write(f"{len(frame)} rows, {wall:.1f} s wall (no --out: nothing written)\n")
    bad = frame[frame["status"].isin(["error", "stopped"])] if len(frame) else frame
    for _, r in bad.iterrows():
        sys.stderr.write(f"conserv: cell {r['cell']} ({r['method']}, seed {r['seed']}) {r['status']}: {r['message']}\n")
    return 1 if len(bad) else 0


def _sweep_table(frame, out) -> None:
    """One line per setting (seeds pooled): runs, failures, and the median test MSE and
    drifts (final and maximum over the horizon) of the runs that finished."""
    if not len(frame):
        out.write("no rows\n")
        return
    from conserv_core import sweeps

    skip = set(sweeps.BASE_COLUMNS) | set(sweeps.METRIC_COLUMNS) | {"cell"}
    # the settings that vary (a one-value flag is the same on every line)
    keys = ["method"] + [c for c in frame.columns if c not in skip and not c.startswith("drift_")
                         and frame[c].nunique(dropna=False) > 1]
    drifts = [c for c in frame.columns if c.startswith("drift_") and not c.endswith("_ood_max")
              and not c.endswith("_ood")]
    ok = frame["status"].isin(["done", "diverged"])
    head = "".join(f"{k[:12]:>12} " for k in keys) + f"{'runs':>5} {'bad':>4} {'test mse':>9}"
    head += "".join(f" {d[6:][:16]:>16}" for d in drifts)
    out.write(head + "   (medians over seeds)\n")
    for vals, grp in frame.groupby(keys, dropna=False, sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        good = grp[ok.loc[grp.index]]
        line = "".join(f"{_cell_text(v)[:12]:>12} " for v in vals)
        line += f"{len(grp):>5} {int((grp['status'] != 'done').sum()):>4} {_fmt(good['test_mse'].median()):>9}"
        line += "".join(f" {_fmt(good[d].median()):>16}" for d in drifts)
        out.write(line + "\n")
    out.write("drift_<q>: |Q(horizon) - Q(0)| / |Q(0)|; drift_<q>_max: its maximum over the horizon; "
              "bad: diverged, error or stopped\n")


def _cell_text(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:g}"
    return str(v)


def _cmd_serve(argv: list[str]) -> int:
    """The dashboard server, in this process (so signals reach it). Its options are the
    app's own (``app/__main__.py``); the engine imports the app only here, on demand."""
    try:
        from app.__main__ import main as serve
    except ImportError as err:
        raise UsageError(f"serve needs the dashboard's packages (pip install -e '.[app]'): {err}") from None
    return serve(argv, prog="conserv serve")


def _take_plugins(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its ``--plugin SPEC`` options (anywhere), and the specs: plugins
    are loaded before the parser is built, whose choices and help list the registries."""
    rest, specs, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--plugin":
            if i + 1 >= len(argv):
                raise UsageError("--plugin needs a module name or a .py file")
            specs.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--plugin="):
            specs.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return rest, specs


def main(argv: list[str] | None = None, out=None) -> int:
    out = out if out is not None else sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # your own methods and systems (conserv_core.plugins): --plugin, or $CONSERV_PLUGINS
        argv, specs = _take_plugins(argv)
        plugins.load_all(specs)
        parser = make_parser()
        if argv[:1] == ["serve"]:
            return _cmd_serve(argv[1:])
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(out)
            return 0
        if args.command == "systems":
            _cmd_systems(out)
            return 0
        if args.command == "methods":
            _cmd_methods(args, out)
            return 0
        if args.command == "sweep":
            return _cmd_sweep(args, out)
        return _cmd_train(args, out)
    except (UsageError, ParameterError, ValueError) as err:
        sys.stderr.write(f"conserv: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
