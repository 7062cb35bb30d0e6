"""The README's promises: a two-command Quickstart whose test command is what CI runs,
and links that point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [b.strip() for b in blocks]


def test_quickstart_is_exactly_two_commands():
    cmds = quickstart_commands()
    assert len(cmds) == 2, cmds
    assert all("\n" not in c for c in cmds)
    assert "conserv serve" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_quickstart_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    block = ci.split("# quickstart-test-begin\n", 1)[1].split("# quickstart-test-end", 1)[0].strip()
    assert block == quickstart_commands()[1]


def test_relative_links_point_at_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [l for l in links if not re.match(r"[a-z]+://", l)]
    missing = [l for l in local if not (ROOT / l).exists()]
    assert not missing, missing


def test_paths_named_in_code_spans_exist():
    named = re.findall(r"`((?:conserv_core|app|notebooks|tests|benchmarks)/[\w./-]+)`", README)
    missing = [p for p in named if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, missing
