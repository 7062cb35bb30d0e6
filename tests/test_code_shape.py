"""``benchmarks/code_shape.py`` as a check: a draw from a global generator anywhere in the
engine or the app fails it (every random draw must come from a generator seeded from the
run's seed, or two runs in one process share a stream). Planted here to show it can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import code_shape  # noqa: E402


@pytest.mark.parametrize("planted", [
    "x = torch.randn(3, 2)",
    "i = torch.randint(0, 5, (4,))",
    "torch.manual_seed(0)",
    "np.random.seed(1)",
    "u = np.random.rand(5)",
    "r = random.random()",
])
def test_a_planted_global_draw_is_caught(planted):
    assert [d for _, d in code_shape.global_draws_in(planted)], planted


@pytest.mark.parametrize("fine", [
    "x = torch.randn(3, 2, generator=g)",
    "g = torch.Generator().manual_seed(seed)",
    "rng = np.random.default_rng(seed)",
    "u = rng.random(5)",
    "r = random.Random(4).random()",
])
def test_a_draw_from_a_seeded_generator_is_not(fine):
    assert code_shape.global_draws_in(fine) == [], fine


def test_the_engine_and_the_app_draw_from_no_global_generator():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "code_shape.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "draws from a global generator: 0" in proc.stdout
