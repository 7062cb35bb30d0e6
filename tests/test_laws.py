"""Which law, which method (conserv_core.laws and the dashboard's table): every row's
preset exists, every method it names applies there, and one click on a cell runs that
cell's comparison."""

from __future__ import annotations

import pytest

import app
from conserv_core import get_system, laws, methods
from conserv_core.presets import PRESETS

FILLED = [(law, c) for law in laws.LAWS for c in laws.COLUMNS if law.methods(c)]


def test_the_issue_s_six_laws_are_rows_and_charge_says_why_it_is_empty():
    assert [law.key for law in laws.LAWS] == ["energy", "dissipation", "momentum", "angular_momentum", "mass",
                                              "charge"]
    charge = laws.get_law("charge")
    assert charge.preset is None and all(charge.query(c) is None and charge.why_empty(c) for c in laws.COLUMNS)
    # an empty cell always says why
    for law in laws.LAWS:
        for c in laws.COLUMNS:
            assert law.methods(c) or law.why_empty(c), (law.key, c)


@pytest.mark.parametrize("law,column", FILLED, ids=lambda x: x if isinstance(x, str) else x.key)
def test_each_cell_names_a_preset_and_methods_that_apply_there(law, column):
    preset = PRESETS[law.preset]
    system = get_system(preset.system, **preset.system_params)
    for m in law.methods(column):
        methods.check_applies(m, system)
    for key, value in law.settings:
        if key == "invariants":
            assert set(value.split(",")) <= set(system.invariant_names()), (law.key, value)
    # the hard column holds constructions, the soft one losses: a method in the wrong column is caught
    for m in law.methods("hard"):
        assert methods.get_method(m).kind == "hard", m
    for m in law.methods("soft"):
        assert methods.get_method(m).kind in ("soft", "mixed"), m  # auglag: a penalty with multipliers


@pytest.mark.parametrize("law,column", FILLED, ids=lambda x: x if isinstance(x, str) else x.key)
def test_a_click_on_a_cell_trains_that_comparison(law, column, monkeypatch):
    d = app.Dashboard(autodrain=False, sync_url=False)
    try:
        s = d.session
        s.methods = ["baseline"]  # the user had changed things since
        trained = []
        monkeypatch.setattr(s, "train", lambda: trained.append((s.system, list(s.methods), s.config.invariants)))
        d.laws_view.buttons[(law.key, column)].clicks += 1
        assert s.status_kind != "warning", s.status  # nothing of the link refused
        preset = PRESETS[law.preset]
        want = ["baseline"] if column == "baseline" else ["baseline", *law.methods(column)]
        assert len(trained) == 1
        system, ticked, invariants = trained[0]
        assert system == preset.system and ticked == want
        for key, value in law.settings:
            if key == "invariants":
                assert list(invariants) == value.split(",")
    finally:
        d.close()


def test_the_readme_table_links_every_row_s_preset():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Which law, which method"):text.index("## Exact in discrete time")]
    for law in laws.LAWS:
        if law.preset is not None:
            assert f"?preset={law.preset}" in section, law.key
        for m in (*law.soft, *law.hard):
            assert f"`{m}`" in section, (law.key, m)
