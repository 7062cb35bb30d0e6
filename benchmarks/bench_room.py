"""A room pressing Train at once: N sessions of the default demo against one server.

One server runs as a subprocess (``conserv serve``, the same server as ``python -m app``:
a Dask LocalCluster of ``--workers`` processes in a process of its own). For each N in
``--sessions`` (default 1,5,10,30), N sessions are opened and all press Train at once:

* up to ``--pages`` (default 2) are real chromium pages; each also measures the widget
  round trip while the room trains (a user's edit of the seed box until the server's
  answer shows in the page's URL), every ``--edit-every-ms`` on average, until the whole
  room is Done; a round too short for ``--min-edits`` (40) edits on after it, said;
* the rest are light clients (``tests/light_client.py``): real server sessions over the
  websocket (the same document a page gets) that send ``DocumentReady`` as BokehJS does,
  press Train by sending the button's ``ButtonClick`` event and apply every patch the
  server pushes, but render nothing. Students' browsers are not on the server's cores;
  these cost this machine little. (``bokeh.client`` handles each message by recursion
  and dies after about 330 messages: rooms measured with it were partly measuring
  clients that had stopped listening. The report says how many were still listening.)

Printed per N, next to the targets: sessions finished; seconds from each session's Train
to its first drift curves and to "Done" (p50/p95); when the last session was Done, against
1.3 × the lone runs' time shared by the workers; the widget round trip (p50/p95, real
pages); CPU seconds of the server's main thread (its event loop, where every session's
updates are built) per session-run, from the first press until the room is Done, and its
share of the cluster's CPU over the same time; RSS of the server process alone and, apart,
of the cluster's process tree, before the sessions opened, at the peak, after they closed
(the server drops a closed session after ``--unused-session-lifetime``) and ``--later-s``
after that; and whether identical sessions drew identical curves (every ColumnDataSource
with a ``drift`` column, compared exactly as multisets).

Usage::

    python benchmarks/bench_room.py --sessions 1,5,10 --workers 2
    python benchmarks/bench_room.py --sessions 1,5,10,30 --steps 200   # a shorter demo: said in the output
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dashboard import ARGS, CHROMIUM, LONGEST, free_port  # noqa: E402  (puts tests/ on the path)
from light_client import LightClient, load_panel_models, main_thread_cpu, tree_cpu  # noqa: E402

from playwright.sync_api import sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: the server: ``conserv serve`` (``python -m app`` is the same main())
SERVER = [sys.executable, "-m", "conserv_core", "serve"]
DEMO_STEPS = 600  # Pendulum.demo (the dashboard's live demo)

#: instruments a page: timestamps of its first drift points and of "Done" (relative to its
#: own Train press), and a loop of seed edits timed until the URL shows them
INSTRUMENT = """([base, gap]) => {
  const B = window.__bench = {t0: null, first: null, done: null, failed: null, trips: [], lost: 0, stop: false};
  const models = () => { const out = []; for (const d of window.Bokeh.documents) for (const m of d.all_models) out.push(m); return out; };
  const longest = () => { let n = -1; for (const m of models()) { const d = m.data; if (d && d.drift !== undefined) n = Math.max(n, d.drift.length); } return n; };
  const look = (text) => {
    if (B.t0 === null || typeof text !== "string") return;
    const now = performance.now() - B.t0;
    if (B.done === null && text.includes("Done (")) B.done = now;
    if (B.failed === null && B.done === null && text.includes("cl-status danger")) B.failed = text;
  };
  const status = () => models().filter(m => typeof m.text === "string" && m.text.includes("cl-status"));
  // the status models' changes, so that a Done replaced at once by a later text is seen
  for (const m of status()) { try { m.properties.text.change.connect(() => look(m.text)); } catch (e) {} }
  B.poll = setInterval(() => {
    if (B.t0 === null) return;
    if (B.first === null && longest() > 0) B.first = performance.now() - B.t0;
    for (const m of status()) look(m.text);
    if (B.done !== null && B.first !== null) clearInterval(B.poll);
  }, 20);
  const seedBox = () => models().find(m => typeof m.title === "string" && m.title.startsWith("Seed") && m.value !== undefined);
  B.trip = async (value) => {
    const w = seedBox(); const t0 = performance.now();
    w.value = value;
    while (!window.location.search.includes("seed=" + value + "&") && !window.location.search.endsWith("seed=" + value)) {
      if (performance.now() - t0 > 10000) return -1;
      await new Promise(r => setTimeout(r, 2));
    }
    return performance.now() - t0;
  };
  B.loop = async () => {
    let k = 0;
    // until the bench says stop: the whole room is Done (and enough edits were timed)
    while (!B.stop && B.failed === null) {
      await new Promise(r => setTimeout(r, gap * (0.5 + Math.random())));
      if (B.stop || B.failed !== null) break;
      const ms = await B.trip(base + k++);
      if (ms < 0) B.lost++; else B.trips.push(ms);
    }
  };
  return status().length;
}"""

PRESS = """(el) => { window.__bench.t0 = performance.now(); el.click(); window.__bench.loop(); }"""
STATE = """() => { const B = window.__bench; return {first: B.first, done: B.done, failed: B.failed, trips: B.trips, lost: B.lost}; }"""
STOP = """() => { window.__bench.stop = true; }"""
#: every drift curve the page holds: [t, drift] of each ColumnDataSource with a drift column
DRIFTS = """() => {
  const out = [];
  for (const doc of window.Bokeh.documents) for (const m of doc.all_models) {
    const d = m.data;
    if (d && d.drift !== undefined) out.push([Array.from(d.t || []), Array.from(d.drift)]);
  }
  return out;
}"""


def curve_key(t, drift) -> str:
    """An exact, hashable form of one curve (repr round-trips a float; NaN is 'nan')."""
    return ";".join(",".join(repr(float(x)) if x is not None else "nan" for x in col) for col in (t, drift))


def multiset(curves) -> tuple:
    return tuple(sorted(curve_key(t, d) for t, d in curves))


class RSS:
    """RSS of the server process and, apart, of its descendants (the cluster), sampled
    on a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self._peak = (0.0, 0.0)
        self._stop = threading.Event()
        threading.Thread(target=self._sample_loop, daemon=True).start()

    def now(self) -> tuple[float, float]:
        server = self.proc.memory_info().rss / 2**20
        tree = 0.0
        for child in self.proc.children(recursive=True):
            try:
                tree += child.memory_info().rss / 2**20
            except psutil.Error:
                pass
        return server, tree

    def _sample_loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                s, c = self.now()
            except psutil.Error:
                return
            self._peak = (max(self._peak[0], s), max(self._peak[1], c))

    def reset(self) -> None:
        self._peak = self.now()

    def peak(self) -> tuple[float, float]:
        return self._peak

    def stop(self) -> None:
        self._stop.set()


def start_server(port: int, workers: int, lifetime_ms: int, check_ms: int, log) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [*SERVER, "--port", str(port), "--workers", str(workers),
           "--unused-session-lifetime", str(lifetime_ms), "--check-unused-sessions", str(check_ms)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the server did not answer within 180 s")


def pct(values, q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; NaN if empty."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


def open_page(browser, url: str, seed_base: int, gap_ms: int):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="commit", timeout=120_000)
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=120_000)
    page.wait_for_function(f"({LONGEST})('drift') === 0", timeout=120_000, polling=50)
    n_status = page.evaluate(INSTRUMENT, [seed_base, gap_ms])
    if not n_status:
        raise RuntimeError("no status line (a model whose text holds 'cl-status') in the page")
    return page


def order(n: int, n_pages: int) -> list[bool]:
    """Which press positions are real pages (True): spread over the queue, so that some
    pages wait behind the others and their round trips are measured under the full load."""
    if n_pages >= n:
        return [True] * n
    spots = {round(i * (n - 1) / max(1, n_pages - 1)) for i in range(n_pages)}
    return [i in spots for i in range(n)]


def run_round(browser, url: str, query: dict, n: int, n_pages: int, rss: RSS, timeout_s: float,
              settle_s: float, gap_ms: int, later_s: float = 0.0, min_edits: int = 0) -> dict:
    from urllib.parse import urlencode

    gate = threading.Semaphore(3)
    kinds = order(n, min(n_pages, n))
    before = rss.now()
    page_url = url + "?" + urlencode(query)
    clients: list = []
    t_open = time.perf_counter()
    lights = [LightClient(url, {k: str(v) for k, v in query.items()}, gate) for real in kinds if not real]
    pages = [open_page(browser, page_url, 100_000 + 1000 * i, gap_ms) for i, real in enumerate(kinds) if real]
    for c in lights:
        c.ready.wait(300)
        if c.error or not c.ready.is_set():
            raise RuntimeError(f"a light client could not open a session: {c.error or 'timed out'}")
    t_opened = time.perf_counter() - t_open
    it_p, it_l = iter(pages), iter(lights)
    clients = [("page", next(it_p)) if real else ("light", next(it_l)) for real in kinds]
    rss.reset()
    cpu0 = main_thread_cpu(rss.proc.pid), tree_cpu(rss.proc.pid)
    pressed = []
    t_round = time.perf_counter()
    for kind, c in clients:
        pressed.append(time.perf_counter() - t_round)
        if kind == "page":
            c.get_by_role("button", name="Train", exact=True).evaluate(PRESS)
        else:
            c.press()
    states: list[dict] = [{} for _ in clients]
    deadline = time.perf_counter() + timeout_s
    while True:
        for i, (kind, c) in enumerate(clients):
            if kind == "page":
                st = c.evaluate(STATE)
                states[i] = {"first": None if st["first"] is None else st["first"] / 1000,
                             "done": None if st["done"] is None else st["done"] / 1000,
                             "failed": st["failed"], "trips": st["trips"], "lost": st["lost"]}
            else:
                states[i] = {"first": c.first, "done": c.done, "failed": c.failed}
        if all(s["done"] is not None or s["failed"] for s in states) or time.perf_counter() > deadline:
            break
        time.sleep(0.5)
    t_all_done = time.perf_counter()
    peak_rss = rss.peak()
    time.sleep(1.5)  # the verdict comes first; the last redraws within a drain or two
    cpu1 = main_thread_cpu(rss.proc.pid), tree_cpu(rss.proc.pid)
    # the pages time edits until the room is Done; a short round (N = 1) edits on until
    # ``min_edits`` are timed (at most 60 s more), said in the report
    page_list = [c for kind, c in clients if kind == "page"]
    extra = time.perf_counter() + 60
    while page_list and time.perf_counter() < extra and \
            sum(len(c.evaluate(STATE)["trips"]) for c in page_list) < min_edits:
        time.sleep(0.5)
    trips_during = sum(len(s.get("trips", [])) for s in states)
    t_edits = time.perf_counter() - t_all_done
    for c in page_list:
        c.evaluate(STOP)
        states[clients.index(("page", c))].update(
            {k: v for k, v in c.evaluate(STATE).items() if k in ("trips", "lost")})
    alive = [c.alive for kind, c in clients if kind == "light"]
    messages = [c.messages for kind, c in clients if kind == "light"]
    curves = [multiset(c.evaluate(DRIFTS)) if kind == "page" else multiset(c.drifts()) for kind, c in clients]
    done_ok = [s["done"] is not None for s in states]
    peak_rss = tuple(max(a, b) for a, b in zip(peak_rss, rss.peak()))
    for kind, c in clients:
        c.close()
    time.sleep(settle_s)
    after = rss.now()
    time.sleep(later_s)  # on a loaded machine the server may drop the sessions late
    later = rss.now()
    finished = [(pressed[i] + s["done"]) for i, s in enumerate(states) if s["done"] is not None]
    trips = [ms for s in states for ms in s.get("trips", [])]
    done_curves = [c for c, ok in zip(curves, done_ok) if ok]
    return {
        "n": n, "pages": sum(kinds), "opened_s": t_opened,
        "finished": sum(done_ok),
        "failed": [s["failed"] for s in states if s["failed"]],
        "first": [s["first"] for s in states if s["first"] is not None],
        "done": [s["done"] for s in states if s["done"] is not None],
        "last_done": max(finished) if finished else float("nan"),
        "trips": trips, "lost": sum(s.get("lost", 0) for s in states),
        "trips_during": trips_during, "edits_after_s": t_edits,
        "cpu_main": cpu1[0] - cpu0[0], "cpu_workers": cpu1[1] - cpu0[1],
        "lights_alive": sum(alive), "lights": len(alive), "messages": messages,
        "rss": (before, peak_rss, after, later), "later_s": later_s,
        "curves": done_curves[0] if done_curves else None,
        "identical": bool(done_curves) and all(c == done_curves[0] for c in done_curves),
        "n_curves": len(done_curves[0]) if done_curves else 0,
        "distinct": len(set(done_curves)),
    }


def report(r: dict, lone_s: float, workers: int, baseline: tuple[float, float], lone_curves) -> list[str]:
    rows = []

    def row(name, value, target="", ok=None):
        rows.append((name, value, target, "" if ok is None else ("ok" if ok else "MISSED")))

    n = r["n"]
    row("sessions finished (Done)", f"{r['finished']} of {n}", f"{n} of {n}", r["finished"] == n)
    if r["failed"]:
        row("  failed or diverged", "; ".join(f[:80] for f in r["failed"][:3]))
    row("first drift curves after Train, p50 / p95", f"{pct(r['first'], 50):.1f} / {pct(r['first'], 95):.1f} s")
    row("Train to Done, p50 / p95", f"{pct(r['done'], 50):.1f} / {pct(r['done'], 95):.1f} s")
    ideal = max(lone_s, n * lone_s / workers)
    row("last session Done (from the first press)", f"{r['last_done']:.1f} s",
        f"≤ {1.3 * ideal:.1f} s", r["last_done"] <= 1.3 * ideal)
    trips = r["trips"]
    row(f"widget round trip while training, p50 / p95 ({len(trips)} edits on {r['pages']} pages)",
        f"{pct(trips, 50):.0f} / {pct(trips, 95):.0f} ms", "p95 < 300 ms", bool(trips) and pct(trips, 95) < 300)
    if len(trips) > r["trips_during"]:
        row("  of which timed after the room was Done",
            f"{len(trips) - r['trips_during']} in {r['edits_after_s']:.0f} s")
    if r["lost"]:
        row("  edits with no answer within 10 s", str(r["lost"]), "0", False)
    if r["lights"]:
        m = r["messages"]
        row("light clients still listening at the end (server messages each, min / max)",
            f"{r['lights_alive']} of {r['lights']} ({min(m)} / {max(m)})", f"{r['lights']} of {r['lights']}",
            r["lights_alive"] == r["lights"])
    per_run = r["cpu_main"] / n
    ratio = r["cpu_main"] / r["cpu_workers"] if r["cpu_workers"] > 0 else float("nan")
    row("server main-thread CPU per session-run; against the workers' CPU",
        f"{per_run:.2f} s; {100 * ratio:.1f} %")
    (sb, cb), (sp, cp), (sa0, ca0), (sa, ca) = r["rss"]
    later = f"{r['later_s']:.0f} s later"
    row("server RSS: before / peak / after close / " + later, f"{sb:.0f} / {sp:.0f} / {sa0:.0f} / {sa:.0f} MB",
        f"≤ before + 50 MB", sa <= sb + 50)
    row("  after, against the first baseline", f"{sa - baseline[0]:+.0f} MB", "≤ +50 MB", sa <= baseline[0] + 50)
    row("cluster RSS (its process tree): before / peak / after / " + later,
        f"{cb:.0f} / {cp:.0f} / {ca0:.0f} / {ca:.0f} MB", f"≤ before + 50 MB", ca <= cb + 50)
    row(f"identical curves across sessions ({r['n_curves']} drift curves each)",
        "yes" if r["identical"] else f"NO: {r['distinct']} different sets", "identical", r["identical"])
    if lone_curves is not None and r["curves"] is not None:
        same = r["curves"] == lone_curves
        row("  and equal to the lone run's", "yes" if same else "NO", "identical", same)
    return [f"  {a:<62} {b:>24}  {c:>20}  {d}" for a, b, c, d in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="1,5,10,30", help="room sizes, comma-separated (default 1,5,10,30)")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"training steps per method (default: the demo's {DEMO_STEPS}); said in the output")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the server's cluster (default 2)")
    ap.add_argument("--pages", type=int, default=2, help="real chromium pages per room, at most (default 2)")
    ap.add_argument("--lifetime-ms", type=int, default=2000, help="the server's --unused-session-lifetime")
    ap.add_argument("--check-ms", type=int, default=500, help="the server's --check-unused-sessions")
    ap.add_argument("--later-s", type=float, default=20.0,
                    help="a second RSS reading this long after the first one after close (default 20)")
    ap.add_argument("--edit-every-ms", type=int, default=500, help="mean gap between a page's seed edits (default 500)")
    ap.add_argument("--min-edits", type=int, default=40,
                    help="edits timed per round at least: a short round edits on after Done (default 40)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sessions.split(",") if s.strip()]
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    load_panel_models()

    query = {"seed": 0}
    if args.steps is not None:
        query["steps"] = args.steps
    steps_note = (f"{args.steps} training steps per method (NOT the demo's {DEMO_STEPS}: --steps {args.steps})"
                  if args.steps is not None else f"the default demo ({DEMO_STEPS} steps per method)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    settle_s = args.lifetime_ms / 1000 + args.check_ms / 1000 + 4
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}; "
          f"cluster workers: {args.workers}; pendulum, baseline + HNN + penalty, {steps_note}")
    log = tempfile.NamedTemporaryFile("w", prefix="bench_room-server-", suffix=".log", delete=False)
    t_start = time.perf_counter()
    proc = start_server(port, args.workers, args.lifetime_ms, args.check_ms, log)
    print(f"server up in {time.perf_counter() - t_start:.1f} s (log: {log.name})", flush=True)
    rss = RSS(proc.pid)

    def terminated(signum, frame):  # `timeout` or a kill: still stop the server below
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    out: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            # warm-up: first imports and first runs on every worker, then the baseline
            warm = run_round(browser, url, {"seed": 0, "steps": 20, "horizon": 2}, args.workers, 1, rss,
                             600, settle_s, 10**6)
            print(f"warm-up: {warm['finished']} of {args.workers} tiny runs done", flush=True)
            baseline = rss.now()
            print(f"baseline RSS: server {baseline[0]:.0f} MB, cluster {baseline[1]:.0f} MB", flush=True)
            lone_s, lone_curves = None, None
            if 1 not in sizes:
                r = run_round(browser, url, query, 1, 1, rss, 900, settle_s, args.edit_every_ms, args.later_s)
                lone_s, lone_curves = r["last_done"], r["curves"]
                print(f"lone run (for the target): Train to Done {lone_s:.1f} s", flush=True)
            for n in sorted(sizes):
                per_run = lone_s if lone_s is not None else 120.0
                timeout = 300 + 3 * n * per_run / args.workers
                t0 = time.perf_counter()
                r = run_round(browser, url, query, n, args.pages, rss, timeout, settle_s, args.edit_every_ms,
                              args.later_s, args.min_edits)
                if n == 1 and lone_s is None:
                    lone_s, lone_curves = r["last_done"], r["curves"]
                head = (f"N = {n}: {r['pages']} chromium pages + {n - r['pages']} light clients; sessions opened "
                        f"in {r['opened_s']:.0f} s; round {time.perf_counter() - t0:.0f} s; load average "
                        f"{os.getloadavg()[0]:.2f}")
                lines = [head, *report(r, lone_s, args.workers, baseline, lone_curves if n != 1 else None)]
                print("\n".join(lines), flush=True)
                out.extend(lines)
            browser.close()
    finally:
        rss.stop()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if lone_s is None:
        return 1
    print(f"\nlone run, Train to Done: {lone_s:.1f} s; target for the last session of N: "
          f"1.3 × max(lone, N × lone ÷ {args.workers} workers)")
    print(f"{steps_note}; {args.workers} workers; {os.cpu_count()} cores shared "
          f"(load average now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
