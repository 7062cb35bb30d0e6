"""Lessons are links: a title, things to try and hidden controls, all in the URL; the
presets are lessons, and the failure-mode lessons open working pages that show what
they say. Headless here (a Dashboard on a Location); the same in a real browser:
tests/test_lessons_browser.py."""

from __future__ import annotations

import re
from types import SimpleNamespace
from pathlib import Path
from urllib.parse import urlencode

import pytest
from panel.io.location import Location

import app
from app import lesson
from app.lesson_views import FAILURE_LINES, failure_links
from conserv_core import presets, training
from conserv_core.systems import get_system

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def link():
    made = []

    def make(search: str) -> app.Dashboard:
        d = app.Dashboard(autodrain=False, location=Location(search=search))
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def hidden(d: app.Dashboard) -> set[str]:
    return {n for n, objs in d.controls._hideable.items() if not all(o.visible for o in objs)}


LESSON = urlencode([("preset", "damped-pendulum"), ("steps", "300"), ("lesson", "Friction and the HNN"),
                    ("try", "Press Train."), ("try", "Set damping to 0."),
                    ("hide", "lr,seed,methods,pendulum.damping")])


def test_a_lesson_link_hides_exactly_its_controls_and_shows_its_list(link):
    d = link("?" + LESSON)
    s = d.session
    assert s.status_kind != "warning", s.status
    assert hidden(d) == {"lr", "seed", "methods", "pendulum.damping"}
    assert s.config.steps == 300 and s.systems["pendulum"].damping == 0.1  # the preset's settings apply
    box = d.lesson_view.box
    assert box.visible and "Friction and the HNN" in box.object
    assert "<li>Press Train.</li><li>Set damping to 0.</li>" in box.object
    assert d.lesson_view._row.visible  # the "show all controls" switch
    # the address bar keeps the lesson: a reload is the same lesson
    assert "lesson=Friction" in d._location.search and "hide=lr%2Cseed" in d._location.search
    d.lesson_view.show_all.value = True
    assert hidden(d) == set()
    d.lesson_view.show_all.value = False
    assert hidden(d) == {"lr", "seed", "methods", "pendulum.damping"}


def test_the_training_card_goes_when_all_its_controls_are_hidden(link):
    d = link("?lesson=T&hide=steps,lr,width,seed,device")
    training_card = d.controls._cards[0]
    assert not training_card.visible and all(c.visible for c in d.controls._cards[1:])


def test_a_lesson_with_garbage_is_refused_part_by_part_and_shown_as_text(link):
    pairs = [("lesson", "<script>alert(1)</script>" + "x" * 100_000), ("hide", "lr,bogus,<img>"),
             ("width", "32")] + [("try", f"line {i} <b>bold</b>") for i in range(7)] + [("try", "y" * 5000)]
    d = link("?" + urlencode(pairs))
    s = d.session
    assert s.status.startswith("Link settings refused"), s.status
    assert "lesson: the title is 100,025 characters long (at most 120)" in s.status
    assert "hide “bogus,<img>”: no such control" in s.status
    assert "try: 7 lines (at most 5" in s.status and "try: a line of 5,000 characters" in s.status
    assert s.config.width == 32 and hidden(d) == {"lr"}  # the rest applies
    box = d.lesson_view.box.object
    assert "<script>" not in box and "&lt;script&gt;alert(1)&lt;/script&gt;" in box
    assert "<b>bold" not in box and "&lt;b&gt;bold" in box and box.count("<li>") == lesson.MAX_TRIES
    assert len(s.lesson.title) <= lesson.MAX_TITLE_CHARS


def test_the_share_panel_makes_a_link_that_reopens_the_lesson(link):
    d = link("?system=nbody&steps=200")
    share = d.share_panel
    assert "nbody.n_bodies" in share.hide.options.values() and "pendulum.mass" not in share.hide.options.values()
    share.title.value = "Momentum & symmetry"
    share.tries.value = "Press Train.\n\nOpen the momentum plot.\n" + "\n".join(f"more {i}" for i in range(6))
    share.hide.value = ["methods", "nbody.n_bodies"]
    assert "Only the first 5 lines are kept" in share.note.object
    url = share.link.value
    assert url.startswith("?") and "system=nbody" in url and "steps=200" in url  # no page address in a test
    # a fresh page (another process, after a restart: nothing is on the server) opens it
    e = link(url)
    assert e.session.status_kind != "warning", e.session.status
    assert e.session.system == "nbody" and e.session.config.steps == 200
    assert e.session.lesson.title == "Momentum & symmetry"
    assert e.session.lesson.tries == ["Press Train.", "Open the momentum plot.", "more 0", "more 1", "more 2"]
    assert hidden(e) == {"methods", "nbody.n_bodies"}
    assert "Momentum &amp; symmetry" in e.lesson_view.box.object


def test_the_share_panel_gives_a_full_address_when_served(link):
    d = link("?steps=100")
    # what a served page's Location holds (its href is read-only, set by the browser)
    d.session.location = SimpleNamespace(href="http://lab.example.org:5006/?steps=100", search="?steps=100")
    try:
        d.share_panel.title.value = "A"
        assert d.share_panel.link.value.startswith("http://lab.example.org:5006/?")
        assert 'target="_blank"' in d.share_panel.open.object
    finally:
        d.session.location = None


def test_every_preset_is_a_lesson():
    for name, p in presets.PRESETS.items():
        assert 1 <= len(p.tries) <= lesson.MAX_TRIES, name
        assert all(0 < len(t) <= lesson.MAX_TRY_CHARS for t in p.tries), name


def test_choosing_a_preset_shows_its_things_to_try(link):
    d = link("")
    assert not d.lesson_view.box.visible
    d.controls.preset.value = "pendulum-hard-vs-soft"
    p = presets.PRESETS["pendulum-hard-vs-soft"]
    assert d.lesson_view.box.visible and p.title in d.lesson_view.box.object
    assert d.lesson_view.box.object.count("<li>") == len(p.tries)
    assert not d.lesson_view._row.visible  # nothing hidden: no switch
    d.controls.system.value = "spring"  # the preset no longer describes the page
    assert not d.lesson_view.box.visible


@pytest.mark.parametrize("name", presets.FAILURE_MODES)
def test_every_failure_mode_link_opens_a_working_page(link, name):
    (line, url), = [(l, u) for l, u in failure_links() if u == f"?preset={name}"]
    d = link(url)
    s, p = d.session, presets.PRESETS[name]
    assert s.preset == name and s.status_kind == "info" and p.title in s.status, s.status
    assert s.system == p.system and s.methods == list(p.methods)
    assert d.lesson_view.box.visible and d.lesson_view.box.object.count("<li>") == len(p.tries)
    assert line == FAILURE_LINES[name]
    # the run it describes is accepted (validated in full, the work budget included)
    cfg = s.build_config()
    training.check_rollout(s.build_system(), s.methods, cfg)


def test_the_readme_and_the_menu_link_every_failure_mode():
    readme = (ROOT / "README.md").read_text()
    linked = re.findall(r"`\?preset=([a-z0-9-]+)`", readme.split("**Failure-mode lessons**", 1)[1][:3000])
    assert linked == list(presets.FAILURE_MODES)
    menu = app.lesson_views.LessonMenu(session=app.Dashboard(autodrain=False).session).__panel__()
    text = menu.objects[1].object
    assert all(f'href="?preset={k}"' in text for k in presets.FAILURE_MODES)


def test_in_a_notebook_the_lesson_menu_applies_the_preset():
    d = app.Dashboard(autodrain=False)  # no page address: buttons, not links
    try:
        buttons = d.lesson_menu.__panel__().objects[1:]
        assert len(buttons) == len(presets.FAILURE_MODES)
        buttons[3].clicks += 1
        assert d.session.preset == presets.FAILURE_MODES[3] and d.session.config.integrator == "euler"
        assert d.lesson_view.box.visible
    finally:
        d.close()


# -- the lessons say what they show: the cheap ones checked on a real (small) run ----------------
def _compare(name: str, **overrides) -> dict:
    p = presets.PRESETS[name]
    sysm = get_system(p.system, **p.system_params)
    cfg = training.make_config(p.system, **{**p.config, **overrides})
    comp = training.Comparison(sysm, list(p.methods), cfg).run()
    return {k: tr.last_eval for k, tr in comp.trainers.items()} | {"truth": training.truth_evaluation(
        next(iter(comp.trainers.values())))}


@pytest.mark.slow
def test_integrator_lesson_the_truth_drifts_under_euler_and_not_under_rk4():
    euler = _compare("integrator-vs-model", steps=1)["truth"].drift["energy"].final
    rk4 = _compare("integrator-vs-model", steps=1, integrator="rk4")["truth"].drift["energy"].final
    assert euler > 1.0 and rk4 < 1e-2 and euler > 1000 * rk4, (euler, rk4)


@pytest.mark.slow
def test_ood_lesson_the_penalty_leaks_and_the_hnn_holds_its_own_energy():
    ev = _compare("ood-leakage", steps=600)
    pen, hnn = ev["penalty"], ev["hnn"]
    assert pen.violation_ood > 20 * pen.violation, (pen.violation, pen.violation_ood)
    # the HNN's own learned energy out of distribution: held to the integrator's error
    assert hnn.learned_drift["energy_ood"].final < 1e-3
    assert hnn.violation_ood < pen.violation_ood
