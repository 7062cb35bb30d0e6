"""Every link opens a working page: a bad part of a link is refused alone, named in one
readable line with what it takes, and the rest of the link applies. A value typed into a
widget is applied, or refused with its range and the box set back to the value in use.

No training here: each case builds a Dashboard on a Location and reads its settings.
"""

from __future__ import annotations

import pytest
from panel.io.location import Location

import app
from app import settings
from conserv_core.devices import available_devices

pytestmark = pytest.mark.timeout(120)

PREFIX = "Link settings refused"


def open_link(search: str) -> app.Dashboard:
    return app.Dashboard(autodrain=False, location=Location(search=search))


@pytest.fixture
def link():
    made = []

    def make(search: str) -> app.Dashboard:
        d = open_link(search)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def refused(d: app.Dashboard) -> str:
    s = d.session
    assert s.status_kind == "warning" and s.status.startswith(PREFIX), s.status
    return s.status


# -- booleans are not numbers -----------------------------------------------------------------
@pytest.mark.parametrize("key, what", [("seed", "whole number from 0 to 2,147,483,647"),
                                       ("steps", "whole number from 1 to 200,000"),
                                       ("lam", "number from 0 to 1,000,000"),
                                       ("n_test", "whole number from 1 to 4,096")])
def test_true_is_refused_for_a_number(link, key, what):
    d = link(f"?{key}=true&width=32")
    cfg = d.session.config
    default = type(cfg).param[key].default if key == "n_test" else getattr(open_link("").session.config, key)
    assert getattr(cfg, key) == default and not isinstance(getattr(cfg, key), bool)
    assert cfg.width == 32  # the rest of the link applies
    text = refused(d)
    assert f"{key} “true”" in text and what in text
    # the widgets show a number, not True (a bool there broke the page's render)
    w = d.controls.config_widgets.get(key)
    if w is not None:
        assert w.value == default and not isinstance(w.value, bool)


def test_a_true_n_test_never_reaches_train(link):
    d = link("?n_test=true")
    assert d.session.build_config().n_test == 16


# -- over-long values and unknown keys ----------------------------------------------------------
@pytest.mark.parametrize("key", ["methods", "system", "lr", "whatever"])
def test_a_100kB_value_is_refused_and_not_echoed(link, key):
    d = link(f"?{key}={'x' * 100_000}&steps=77")
    s = d.session
    assert s.config.steps == 77 and s.system == "pendulum" and s.methods
    text = refused(d)
    assert key in text and len(text) < 400
    if key != "whatever":  # refused unread, for its length
        assert f"{key}: 100,000 characters long (at most 1,000)" in text, text
    assert len(d.status_view.line.object) < 600
    assert "x" * 100 not in d._location.search


def test_an_unknown_key_is_named(link):
    d = link("?colour=red&steps=50")
    assert d.session.config.steps == 50
    assert "colour: no such setting" in refused(d)


# -- escaping ---------------------------------------------------------------------------------
def test_a_refused_value_is_escaped_exactly_once(link):
    d = link("?lr=%3Cimg%20src=x%20onerror=alert(1)%3E&methods=%3Cb%3Ehnn")
    text = refused(d)
    assert "lr “<img src=x onerror=alert(1)>”" in text and "number from 1e-06 to 1,000" in text
    html = d.status_view.line.object
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert "&amp;" not in html  # escaped once: what the page shows is the text itself
    assert "methods “<b>hnn”" in text


# -- empty and inapplicable values --------------------------------------------------------------
@pytest.mark.parametrize("key, what", [("lr", "lr is empty: takes a number from 1e-06 to 1,000"),
                                       ("horizon", "horizon is empty: takes a number from 0.001 to 100,000"),
                                       ("methods", "methods is empty")])
def test_an_empty_value_is_named(link, key, what):
    d = link(f"?{key}=&seed=3")
    assert d.session.config.seed == 3
    assert what in refused(d)


def test_an_invariant_the_system_lacks_is_named(link):
    d = link('?invariants=["momentum"]&steps=40')
    s = d.session
    assert s.config.invariants == [] and s.config.steps == 40
    assert "invariants “momentum”: the Pendulum's invariants are energy" in refused(d)
    ok = link('?system=spring&invariants=["energy"]')
    assert ok.session.config.invariants == ["energy"] and ok.session.status_kind != "warning"


@pytest.mark.slow
@pytest.mark.skipif("cuda" in available_devices(), reason="this machine has CUDA, so a cuda link is valid here: nothing to refuse")
def test_a_device_this_machine_lacks_is_named(link):
    d = link("?device=cuda&steps=40")
    assert d.session.config.device == "cpu" and d.session.config.steps == 40
    assert "device “cuda”: not available here; one of auto, cpu" in refused(d)


# -- the valid parts of a partly bad link -------------------------------------------------------
def test_the_valid_parts_of_a_partly_bad_link_apply(link):
    d = link("?invariants=garbage&steps=50")
    assert d.session.config.steps == 50
    text = refused(d)
    assert "invariants “garbage”" in text and "steps" not in text
    d = link("?system=nbody&methods=baseline,nope,lnn&seed=true&lr=0.002&nbody.n_bodies=99&nbody.G=2")
    s = d.session
    assert s.system == "nbody" and s.methods == ["baseline", "lnn"]
    assert s.config.lr == 0.002 and s.systems["nbody"].G == 2 and s.systems["nbody"].n_bodies != 99
    text = refused(d)
    for part in ("methods “nope”", "seed “true”", "nbody.n_bodies “99”"):
        assert part in text, text
    # the address bar holds the settings in use, none of the refused values
    assert "seed=0" in d._location.search and "nope" not in d._location.search
    assert "n_bodies=99" not in d._location.search


def test_a_good_link_gives_no_notice(link):
    d = link("?system=spring&methods=baseline,hnn&steps=123&seed=5&projection=true&spring.k=2")
    s = d.session
    assert s.status_kind == "info", s.status
    assert (s.config.steps, s.config.seed, s.config.projection, s.systems["spring"].k) == (123, 5, True, 2)
    # what the address bar then holds opens the same settings, again without a notice
    again = link(d._location.search)
    assert again.session.status_kind == "info"
    assert again.session.query_string() == s.query_string()


def test_the_address_bar_sent_back_by_the_browser_is_read_the_same_way(link):
    """A served page's browser sends its address once the page is up: the raw link."""
    d = link("?seed=true&steps=50")
    loc = d._location
    loc.search = "?seed=true&steps=50"
    assert d.session.config.seed == 0 and d.session.config.steps == 50
    assert "seed “true”" in refused(d) and "seed=0" in loc.search


# -- widgets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("owner, key, typed, what", [
    ("config", "steps", 0, "whole number from 1 to 200,000"),
    ("config", "steps", 10**9, "whole number from 1 to 200,000"),
    ("config", "steps", None, "steps is empty"),
    ("config", "lr", 1e9, "number from 1e-06 to 1,000"),
    ("config", "seed", -1, "whole number from 0 to 2,147,483,647"),
    ("config", "width", 100_000, "whole number from 4 to 1,024"),
    ("pendulum", "mass", -1.0, "number from 0.001 to 1,000"),
])
def test_a_typed_value_out_of_range_is_refused_and_the_box_shows_the_value_in_use(link, owner, key, typed, what):
    d = link("")
    s = d.session
    if owner == "config":
        w, obj = d.controls.config_widgets[key], s.config
    else:
        w = d.controls._system_widgets[owner][0]
        obj = s.systems[owner]
    before = getattr(obj, key)
    w.value = typed  # what typing into the box does
    assert getattr(obj, key) == before
    assert w.value == before  # shown = used
    assert s.status_kind == "warning" and key in s.status and what in s.status, s.status
    assert not s.errors
    w.value = before * 2 if key != "seed" else 7  # a good value still applies
    assert getattr(obj, key) == w.value


# -- the checks themselves ----------------------------------------------------------------------
def test_from_text_refuses_what_param_would_let_through():
    from conserv_core.training import TrainConfig

    p = TrainConfig.param
    for name, text in [("seed", "true"), ("seed", "1.5"), ("lr", "nan"), ("lr", "inf"), ("steps", "0x10"),
                       ("projection", "yes please"), ("integrator", "euler!"), ("lr", "1" * 2000)]:
        with pytest.raises(settings.Refused, match=name):
            settings.from_text(p[name], name, text)
    assert settings.from_text(p["steps"], "steps", "1e3") == 1000
    assert settings.from_text(p["projection"], "projection", "true") is True
    assert settings.from_text(p["invariants"], "invariants", "energy,momentum") == ["energy", "momentum"]
