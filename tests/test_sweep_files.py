"""Sweeps that lose nothing (issue 31, item 5): the results file's path, resume's checks
of the file it resumes, and a full disk.

No test here trains: ``sweeps.run_cell`` is replaced by a fake that returns a row at once
(the real cells' rows and resume are tested in test_sweep.py), so each test is about the
file alone and takes milliseconds.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat

import pytest

from conserv_core import cli, sweeps
from conserv_core.systems import ParameterError

pytestmark = pytest.mark.timeout(60)

TINY = dict(steps=[30], width=[16], eval_every=[15], n_test=[4], horizon=[2.0], device=["cpu"])
FLAGS = ["sweep", "--system", "pendulum", "--methods", "baseline", "--seeds", "0-2", "--steps", "30",
         "--width", "16", "--eval-every", "15", "--n-test", "4", "--horizon", "2", "--device", "cpu",
         "--in-process", "--quiet"]


def three_cells() -> sweeps.Grid:
    return sweeps.grid("pendulum", ["baseline"], seeds=[0, 1, 2], config=TINY)


@pytest.fixture
def ran(monkeypatch):
    """The seeds of the cells that ran (a fake ``run_cell``: a done row whose test MSE is an
    inexact float, so a row read back must round-trip it)."""
    seeds: list[int] = []

    def fake(spec_dict, stop_event=None):
        seed = spec_dict["config"]["seed"]
        seeds.append(seed)
        return {"status": "done", "message": "", "steps": 30, "train_seconds": 0.25,
                **sweeps.evaluation_metrics(None), "test_mse": 0.1 + seed / 3}

    monkeypatch.setattr(sweeps, "run_cell", fake)
    return seeds


def records(path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def assert_whole(path, n_rows: int) -> None:
    """Every row has the header's fields, distinct cell keys, and the file ends in a newline."""
    data = open(path, "rb").read()
    assert data.endswith(b"\r\n"), data[-40:]
    head, *rows = records(path)
    assert len(rows) == n_rows and all(len(r) == len(head) for r in rows), rows
    keys = [r[head.index("cell")] for r in rows]
    assert len(set(keys)) == n_rows and all(len(k) == 12 for k in keys), keys
    assert sweeps._check_resume_csv(str(path), data) == (None, "")


def one_line_cli(argv, capsys, after_start: bool = False) -> str:
    """The CLI's stderr: one error line, exit 2 (``after_start``: the error came once the
    sweep had begun, after its one ``sweep: N cells`` line)."""
    rc = cli.main(argv, out=io.StringIO())
    err = capsys.readouterr().err
    if after_start:
        assert err.startswith("sweep: 3 cells, 3 distinct runs"), err
        err = err.split("\n", 1)[1]
    assert rc == 2 and err.startswith("conserv: error: ") and err.count("\n") == 1 and "Traceback" not in err, (rc, err)
    return err


# ---------------------------------------------------------------------------------------
# --out: a regular file or a new path, nothing else
# ---------------------------------------------------------------------------------------
def _device(p):
    try:
        os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("mknod needs root")
    return "a device node"


def _fifo(p):
    os.mkfifo(p)
    return "a FIFO"


def _symlink(p):
    target = p.parent / "target.csv"
    target.write_text("precious\n")
    os.symlink(target, p)
    return "a symbolic link"


def _folder(p):
    p.mkdir()
    return "a folder"


NOT_FILES = {"device": _device, "fifo": _fifo, "symlink": _symlink, "folder": _folder}


def _same_kind(p, kind) -> bool:
    mode = os.lstat(p).st_mode
    return {"device": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "symlink": stat.S_ISLNK, "folder": stat.S_ISDIR}[kind](mode)


@pytest.mark.parametrize("kind", NOT_FILES)
def test_an_out_that_is_not_a_regular_file_is_refused_before_any_cell_runs(kind, tmp_path, ran):
    p = tmp_path / "out.csv"
    what = NOT_FILES[kind](p)
    with pytest.raises(ParameterError) as err:
        sweeps.run(three_cells(), out=p)
    msg = str(err.value)
    assert msg.startswith(f"out {p} is {what};") and "regular file or a new path" in msg and "\n" not in msg
    assert ran == [] and _same_kind(p, kind)  # nothing ran, the path is what it was
    assert sorted(os.listdir(tmp_path)) == sorted(["out.csv"] + (["target.csv"] if kind == "symlink" else []))
    if kind == "symlink":
        assert (tmp_path / "target.csv").read_text() == "precious\n"


@pytest.mark.timeout(20)  # without the check, the CLI's write test would block on the FIFO
@pytest.mark.parametrize("kind", NOT_FILES)
def test_the_cli_refuses_such_an_out_with_one_line(kind, tmp_path, ran, capsys):
    p = tmp_path / "out.csv"
    what = NOT_FILES[kind](p)
    err = one_line_cli([*FLAGS, "--out", str(p)], capsys)
    assert f"--out {p} is {what}" in err, err
    assert ran == [] and _same_kind(p, kind)


def test_a_new_path_and_a_regular_file_are_fine(tmp_path, ran):
    p = tmp_path / "new.csv"
    sweeps.run(three_cells()[:1], out=p)
    sweeps.run(three_cells(), out=p, resume=True)
    assert ran == [0, 1, 2]
    assert_whole(p, 3)


# ---------------------------------------------------------------------------------------
# --resume: the file is checked; a partial last row is dropped and runs again
# ---------------------------------------------------------------------------------------
#: where a write can be cut: inside the row, just before its line end, between \r and \n
CUTS = {"mid-row": lambda row: len(row) // 2, "before the line end": lambda row: len(row) - 2,
        "between CR and LF": lambda row: len(row) - 1, "inside the cell key": lambda row: 5}


@pytest.mark.parametrize("cut", CUTS)
def test_resume_drops_a_partial_last_row_and_runs_its_cell_again(cut, tmp_path, ran, capsys):
    p = tmp_path / "r.csv"
    cells = three_cells()
    sweeps.run(cells, out=p)
    whole = open(p, "rb").read()
    last = whole[whole.rindex(b"\r\n", 0, len(whole) - 2) + 2:]  # the last row, with its \r\n
    assert last.startswith(cells[2].key.encode())
    open(p, "wb").write(whole[: len(whole) - len(last) + CUTS[cut](last)])
    ran.clear()
    seen = []
    frame = sweeps.run(cells, out=p, resume=True, on_progress=lambda st: seen.append(st.repaired))
    assert ran == [2]  # only the cut cell ran again
    assert seen and seen[0].startswith("dropped a partial last row") and seen[0].endswith("it reruns")
    assert frame.attrs["repaired"] == seen[0]
    if cut != "inside the cell key":
        assert f"cell {cells[2].key}" in seen[0]
    assert_whole(p, 3)
    assert open(p, "rb").read() == whole  # the same bytes as a sweep that was never cut
    assert list(frame["test_mse"]) == [0.1, 0.1 + 1 / 3, 0.1 + 2 / 3]
    # without a progress hook the line goes to stderr
    open(p, "wb").write(whole[:-3])
    sweeps.run(cells, out=p, resume=True)
    assert capsys.readouterr().err == f"sweep: {p}: dropped a partial last row (cell {cells[2].key}); it reruns\n"
    assert_whole(p, 3)


def test_the_cli_says_it_dropped_a_partial_row(tmp_path, ran, capsys):
    p = tmp_path / "r.csv"
    assert cli.main([*FLAGS, "--out", str(p)], out=io.StringIO()) == 0
    whole = open(p, "rb").read()
    open(p, "wb").write(whole[:-7])
    ran.clear()
    assert cli.main([*FLAGS, "--out", str(p), "--resume"], out=io.StringIO()) == 0
    err = capsys.readouterr().err
    assert ran == [2] and "dropped a partial last row (cell " in err and "it reruns" in err, err
    assert open(p, "rb").read() == whole


def test_a_sweep_without_resume_does_not_glue_its_first_row_onto_a_partial_one(tmp_path, ran):
    p = tmp_path / "r.csv"
    cells = three_cells()
    sweeps.run(cells, out=p)
    whole = open(p, "rb").read()
    open(p, "wb").write(whole[:-9])
    sweeps.run(cells[2:], out=p)  # the cut cell again, without --resume: appended
    assert open(p, "rb").read() == whole
    assert_whole(p, 3)


def test_a_cut_header_is_written_again(tmp_path, ran, capsys):
    p = tmp_path / "r.csv"
    sweeps.run(three_cells(), out=p)
    whole = open(p, "rb").read()
    open(p, "wb").write(whole[:20])
    ran.clear()
    sweeps.run(three_cells(), out=p, resume=True)
    assert ran == [0, 1, 2] and "the header was cut off" in capsys.readouterr().err
    assert open(p, "rb").read() == whole


def _nul_header(text: str) -> str:
    return text.replace("system", "sys\x00tem", 1)


def _no_cell(text: str) -> str:
    return text.replace("cell,", "", 1)


def _short_middle_row(text: str) -> str:
    lines = text.split("\r\n")
    lines[1] = lines[1].rsplit(",", 3)[0]
    return "\r\n".join(lines)


def _long_middle_row(text: str) -> str:
    lines = text.split("\r\n")
    lines[1] += ",extra"
    return "\r\n".join(lines)


def _empty_key(text: str) -> str:
    lines = text.split("\r\n")
    lines[2] = lines[2][12:]
    return "\r\n".join(lines)


def _twice(text: str) -> str:
    assert ",width," in text.split("\r\n")[0]
    return text.replace(",width,", ",config_steps,", 1)


UNTRUSTED = {
    "NUL in the header": (_nul_header, "the header holds control characters ('\\x00')"),
    "no cell column": (_no_cell, "no cell column(s) in the header"),
    "a short row in the middle": (_short_middle_row, "row 1 has"),
    "a long row in the middle": (_long_middle_row, "row 1 has"),
    "a row without its cell key": (_empty_key, "row 2 has no cell key"),
    "a column named twice": (_twice, "the header names config_steps twice"),
}


@pytest.mark.parametrize("case", UNTRUSTED)
def test_resume_refuses_a_file_it_cannot_trust_before_anything_runs(case, tmp_path, ran, capsys):
    spoil, needle = UNTRUSTED[case]
    p = tmp_path / "r.csv"
    sweeps.run(three_cells(), out=p)
    bad = spoil(open(p, newline="").read())
    open(p, "w", newline="").write(bad)
    ran.clear()
    with pytest.raises(ParameterError) as err:
        sweeps.run(three_cells(), out=p, resume=True)
    assert str(err.value).startswith(f"out {p}: ") and needle in str(err.value) and "\n" not in str(err.value)
    assert ran == [] and open(p, newline="").read() == bad  # nothing ran, the file untouched
    # the CLI: one line, exit 2, no traceback
    err = one_line_cli([*FLAGS, "--out", str(p), "--resume"], capsys)
    assert err.startswith(f"conserv: error: --out {p}: ") and needle in err and ran == []
    assert open(p, newline="").read() == bad


# ---------------------------------------------------------------------------------------
# a full disk
# ---------------------------------------------------------------------------------------
def _full_disk(monkeypatch, header_too: bool) -> None:
    class Full(csv.DictWriter):
        def writeheader(self):
            if header_too:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.writer.writerow(self.fieldnames)  # DictWriter's own goes through writerow

        def writerow(self, rowdict):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sweeps.csv, "DictWriter", Full)


@pytest.mark.parametrize("where", ["the header (a temporary file)", "a row (the file itself)"])
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(where, tmp_path, ran, monkeypatch, capsys):
    _full_disk(monkeypatch, header_too=where.startswith("the header"))
    p = tmp_path / "r.csv"
    with pytest.raises(ParameterError) as err:
        sweeps.run(three_cells(), out=p)
    msg = str(err.value)
    assert msg.startswith(f"out {p}: writing failed (No space left on device)") and "\n" not in msg, msg
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f], os.listdir(tmp_path)
    assert len(ran) <= 1  # the sweep stopped at the first row it could not write
    err = one_line_cli([*FLAGS, "--out", str(p)], capsys, after_start=True)
    assert "No space left on device" in err
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f], os.listdir(tmp_path)


def test_a_full_disk_while_rewriting_a_resumed_file_keeps_its_rows(tmp_path, ran, monkeypatch):
    p = tmp_path / "r.csv"
    sweeps.run(three_cells()[:2], out=p)
    # a column the writer adds makes it rewrite the file (a temporary file renamed over it)
    head, *rows = records(p)
    drop = head.index("drift_energy_ood_max")
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows([[f for i, f in enumerate(r) if i != drop] for r in [head, *rows]])
    before = buf.getvalue()
    open(p, "w", newline="").write(before)
    _full_disk(monkeypatch, header_too=True)
    with pytest.raises(ParameterError, match="No space left on device"):
        sweeps.run(three_cells(), out=p, resume=True)
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f], os.listdir(tmp_path)
    assert open(p, newline="").read() == before  # the rows it had are still there
