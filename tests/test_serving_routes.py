"""Panel 1.9.4's ``/components/<module>/...`` route imports whatever module a URL names
(``GET /components/this/a/b/c`` printed the Zen of Python in the server's log). Served
our way, no URL imports anything: 404 for modules not already loaded from Panel or
``app``. No browser needed."""

from __future__ import annotations

import sys

import pytest
from tornado.web import HTTPError

from serving_helpers import free_port, http_get, panel_serve, python_m_app, wait_until_up

pytestmark = pytest.mark.timeout(180)

ZEN = "Beautiful is better than ugly"
PROBE = "components/this/a/b/c"
#: a file the server serves without opening a session
STATIC = "/static/extensions/panel/css/loading.css"


def test_only_loaded_modules_of_panel_and_app_pass():
    from app.serving import check_component_path

    check_component_path("panel.layout.base/Column/_stylesheets/x.css")
    check_component_path("app.views/Controls/_stylesheets/x.css")
    for path in ["this/a/b/c", "antigravity/a/b/c", "os/a/b/c", "panel_not_a_module/a/b/c",
                 "app.not_a_module/a/b/c", ""]:
        with pytest.raises(HTTPError) as err:
            check_component_path(path)
        assert err.value.status_code == 404


@pytest.mark.slow
def test_in_process_server_does_not_import_a_module_named_in_the_url():
    import panel as pn

    from app.dashboard import create_app
    from app.serving import serve_kwargs

    if "this" in sys.modules:
        pytest.skip("`this` was imported before the test: cannot tell")
    port = free_port()
    srv = pn.serve({"/": create_app}, port=port, address="127.0.0.1", threaded=True, show=False,
                   websocket_origin=[f"127.0.0.1:{port}"], **serve_kwargs())
    try:
        wait_until_up(f"http://127.0.0.1:{port}/", 60)
        status, _ = http_get(f"http://127.0.0.1:{port}/{PROBE}")
        assert status == 404
        assert "this" not in sys.modules
    finally:
        srv.stop()


@pytest.mark.slow
def test_python_m_app_does_not_import_a_module_named_in_the_url(tmp_path):
    with python_m_app(tmp_path / "server.log") as srv:
        status, _ = http_get(srv.url + PROBE)
        # Panel's own handler answers 404 too ("Component not found"), but after the import
        assert status == 404
        assert ZEN not in srv.output()
        assert http_get(srv.url)[0] == 200  # the page itself is served


@pytest.mark.slow
def test_panel_serve_with_the_plugin_does_not_import_it_either(tmp_path):
    # before any session: the plugin, not the script's first run, must have closed it
    srv = panel_serve(tmp_path / "server.log", "--plugins", "app.panel_plugin")
    try:
        srv.start(ready=STATIC)
        status, _ = http_get(f"http://127.0.0.1:{srv.port}/{PROBE}")
        assert status == 404
        assert ZEN not in srv.output()
    finally:
        srv.kill()


def _raised(fn) -> list:
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 -- handed to the test's thread
        return [err]
    return []


def test_a_burst_of_closed_sessions_is_one_collection_on_the_loop(monkeypatch):
    """Ten sessions closing at once cost the event loop one collection, not ten (each
    ~0.3 s: ten stalled every other session for 3 s); a later close gets its own."""
    import asyncio
    import gc
    import threading

    from app import serving

    collected = []
    monkeypatch.setattr(serving, "RELEASE_BATCH_S", 0.2)
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(1))

    async def room():
        for _ in range(10):
            serving.release_memory_soon()
        assert not collected  # later, not in the close itself
        await asyncio.sleep(0.5)
        assert len(collected) == 1
        serving.release_memory_soon()
        await asyncio.sleep(0.4)

    # on a thread of its own: a browser test before may leave a loop running on this one
    errors = []
    t = threading.Thread(target=lambda: errors.extend(_raised(lambda: asyncio.run(room()))))
    t.start()
    t.join(10)
    assert not errors, errors
    assert len(collected) == 2
    # no loop on the calling thread (a script, a test): at once
    t = threading.Thread(target=serving.release_memory_soon)
    t.start()
    t.join(10)
    assert len(collected) == 3

