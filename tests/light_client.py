"""A student's session without a browser, written once for the room test and
``benchmarks/bench_room.py``: a real Bokeh session over the websocket that presses Train
and receives every update the server pushes, but renders nothing.

Why not ``bokeh.client.pull_session``: its connection (bokeh 3.9,
``bokeh/client/connection.py``) handles each message by recursion:
``_handle_messages`` awaits ``_next``, which awaits ``state.run``, which awaits
``_handle_messages`` again, three coroutine frames deeper per message. After about 330
server messages Python's recursion limit ends the client with a RecursionError, and a
room measured with such clients was partly measuring clients that had stopped listening
(one default demo sends a session some 1,000+ messages). This client speaks the same
protocol (``bokeh.protocol``: ACK, PULL-DOC-REQ/REPLY, PATCH-DOC both ways) from one flat
``while`` loop over tornado's ``websocket_connect``, on an asyncio loop of its own thread.

Also here: CPU time of a process's main thread and of its descendants (``psutil``), which
is how a room's cost to the server's event loop is told from the cluster's training.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from urllib.parse import urlencode

import psutil

#: the largest message the server may send (bokeh's default is 20 MB; a full document is smaller)
MAX_MESSAGE = 200 * 2**20


def load_panel_models() -> None:
    """Panel's base models and its templates' (what every page holds); the rest are
    imported as a document names them (:func:`import_models_named`). Importing all of
    ``panel.models`` would register models whose JavaScript lives on a CDN (Vizzu): a
    Panel server in the same process, as in the suite, then asks every page it serves to
    fetch it from outside."""
    import panel.models  # noqa: F401
    import panel.template  # noqa: F401


_IMPORTED: set[str] = set()


def import_models_named(content) -> None:
    """Import the module of every Panel model a message's ``content`` names
    (``"panel.models.markup.HTML"``), before a document is built from it."""
    stack = [content]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = item.get("name")
            if item.get("type") == "object" and isinstance(name, str) and name.startswith("panel."):
                module = name.rsplit(".", 1)[0]
                if module not in _IMPORTED:
                    _IMPORTED.add(module)
                    try:
                        importlib.import_module(module)
                    except ImportError:  # not a module path: the model is in an imported one
                        pass
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class LightClient:
    """A real server session without a browser: connect, pull the document, send
    ``DocumentReady`` as BokehJS does, then apply every PATCH-DOC the server pushes until
    the socket closes (counted in ``messages``). ``press()`` sends the Train button's
    ``ButtonClick`` event, what a page's click sends.

    ``t0``/``first``/``done``/``failed``: the press time, and seconds after it to the first
    drift points, to "Done" in the status line, or the failing status text.
    """

    def __init__(self, url: str, arguments: dict, gate: threading.Semaphore | None = None,
                 button: str = "Train"):
        self.url, self.arguments, self.gate, self.button_label = url, arguments, gate, button
        self.t0 = self.first = self.done = self.failed = None
        self.error: str | None = None
        self.messages = 0  # server messages handled (ACK and PULL-DOC-REPLY included)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.socket = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="light-client")
        self.thread.start()

    # -- the client's own thread -------------------------------------------------------------

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except Exception as err:  # noqa: BLE001 - reported, not raised, on this thread
            self.error = self.error or f"{type(err).__name__}: {err}"
        finally:
            self.ready.set()
            self.loop.close()

    async def _main(self) -> None:
        from bokeh.client.util import websocket_url_for_server_url
        from bokeh.client.websocket import WebSocketClientConnectionWrapper
        from bokeh.document import Document
        from bokeh.events import DocumentReady
        from bokeh.models import Button
        from bokeh.protocol import Protocol
        from bokeh.protocol.receiver import Receiver
        from bokeh.util.token import generate_jwt_token, generate_session_id
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        self.protocol = Protocol()
        self.receiver = Receiver(self.protocol)
        session_id = generate_session_id()
        url = websocket_url_for_server_url(self.url.rstrip("/") + "/")
        if self.arguments:
            url += "?" + urlencode(self.arguments)
        if self.gate is not None:  # a few at a time: the server builds one session at a time anyway
            await asyncio.to_thread(self.gate.acquire)
        try:
            raw = await websocket_connect(HTTPRequest(url), subprotocols=["bokeh", generate_jwt_token(session_id)],
                                          max_message_size=MAX_MESSAGE)
            self.socket = WebSocketClientConnectionWrapper(raw)
            ack = await self._receive()
            if ack is None or ack.msgtype != "ACK":
                raise ConnectionError(f"expected ACK, got {ack and ack.msgtype}")
            await self._send(self.protocol.create("PULL-DOC-REQ"))
            while True:
                reply = await self._receive()
                if reply is None:
                    raise ConnectionError("the server closed the socket before sending the document")
                if reply.msgtype == "ERROR":
                    raise RuntimeError(reply.content.get("text"))
                if reply.msgtype == "PULL-DOC-REPLY":
                    break
            self.doc = Document()
            import_models_named(reply.content)
            reply.push_to_document(self.doc)
        finally:
            if self.gate is not None:
                self.gate.release()
        self.button = next(m for m in self.doc.models if isinstance(m, Button) and m.label == self.button_label)
        self.doc.on_change(self._changed)
        await self._send_event(DocumentReady())
        self.ready.set()
        # one flat loop, one message at a time: no frame is left behind per message
        while (msg := await self._receive()) is not None:
            if msg.msgtype == "PATCH-DOC":
                import_models_named(msg.content)
                msg.apply_to_document(self.doc, self)

    async def _receive(self):
        """The next whole message (fragments joined), or None once the socket is closed."""
        while True:
            fragment = await self.socket.read_message()
            if fragment is None:
                return None
            msg = await self.receiver.consume(fragment)
            if msg is not None:
                self.messages += 1
                return msg

    async def _send(self, msg) -> None:
        await msg.send(self.socket)

    async def _send_event(self, event) -> None:
        from bokeh.document.events import MessageSentEvent

        await self._send(self.protocol.create("PATCH-DOC", [MessageSentEvent(self.doc, "bokeh_event", event)]))

    def _changed(self, event) -> None:
        if self.t0 is None:
            return
        from bokeh.models import ColumnDataSource

        now = time.perf_counter() - self.t0
        model = getattr(event, "model", None)
        if self.first is None and isinstance(model, ColumnDataSource) and len(model.data.get("drift", ())) > 0:
            self.first = now
        new = getattr(event, "new", None)
        if getattr(event, "attr", None) == "text" and isinstance(new, str):
            if self.done is None and "Done (" in new:
                self.done = now
            elif self.failed is None and self.done is None and "cl-status danger" in new:
                self.failed = new

    def _call(self, fn, timeout: float = 30):
        """``fn()`` on the client's loop (the document is only touched there); its result."""
        async def wrapped():
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    # -- from any thread ---------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Still reading the socket (not ended by an error or a close)."""
        return self.thread.is_alive() and self.error is None

    def press(self) -> None:
        """Train: the button's ``ButtonClick``, sent as a page sends it."""
        from bokeh.events import ButtonClick

        self.t0 = time.perf_counter()
        asyncio.run_coroutine_threadsafe(self._send_event(ButtonClick(self.button)), self.loop).result(30)

    def drifts(self) -> list:
        """[t, drift] of every ColumnDataSource with a drift column in the document."""
        from bokeh.models import ColumnDataSource

        return self._call(lambda: [(list(m.data.get("t", [])), list(m.data["drift"])) for m in list(self.doc.models)
                                   if isinstance(m, ColumnDataSource) and "drift" in m.data])

    def close(self) -> None:
        if self.loop is not None and self.socket is not None and self.thread.is_alive():
            try:
                self.loop.call_soon_threadsafe(self.socket.close)
            except RuntimeError:  # the loop has just ended
                pass
        self.thread.join(timeout=10)


def main_thread_cpu(pid: int) -> float:
    """User + system CPU seconds of the process's main thread (on Linux its id is the pid)."""
    for t in psutil.Process(pid).threads():
        if t.id == pid:
            return t.user_time + t.system_time
    raise LookupError(f"no main thread in process {pid}")


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of every live descendant of ``pid`` (the cluster a server
    started: its scheduler/nanny/worker processes)."""
    total = 0.0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total
