"""Training speed while browser tabs watch the live Train page, and the server's memory over a
soak with those tabs open ("a lab that can be shared safely").

Speed: each side-run launches a fresh `streamlit run dashboard.py` (free port; a scratch
CIFAR_ARTIFACTS_DIR whose cache/ is kept between runs and whose runs/ is emptied before each)
and starts a long training job from one headless-Chromium tab through the Train form. Once the
job's first epoch has ended (TensorFlow loaded, the model traced), it opens more tabs on
/train, all at once, until N tabs watch the job (every open Train tab's live panel fetches the
run's progress file from the server once a second, and its charts when they change: see
cifar_ui/browser_feed.py), or for N = 0 closes the starting tab so nothing polls (and the feed,
which runs only while a browser session shows the run, stops within seconds: the ratio is the
whole cost of watching, feed included). After
--warmup-seconds it measures for --measure-seconds, then closes the tabs, stops the job from a
fresh tab and stops the server. Sides alternate (0, 1, 10, 0, 1, 10, ...) for --rounds rounds.

The speed is the job's own: Keras' TensorBoard callback writes the batch loss every 20 steps
into the run folder (tensorboard/train/events.*) with the server's wall-clock time, read back
here once the job has stopped. images/s = images trained between consecutive such events
inside the window / their time apart, leaving out the gaps that hold an epoch's end
(validation, checkpoint): training time only, as history.json's `train_seconds` counts it.
When fewer than two events fall inside the window (a stalled job), the events around it give
a coarse rate, marked as such. Target: 10 tabs cost <= 5% of the 0-tab speed (median of
same-round ratios).

Soak: one more fresh server with 10 tabs on /train while a long job trains (opened, as above,
after its first epoch); the server's RSS when the tabs are open and every --sample-seconds for
--soak-minutes, then Stop from a fresh tab; RSS growth against --rss-bound-mb, and the
training speed per interval.

Alongside: per-tab requests per second, counted inside each page: the live panel's polls of the
feed (fetches of app/static/live/...), and websocket messages (sent = the tab's rerun requests,
received = what the server pushed); the server's CPU by thread (from
/proc/<pid>/task): the training thread (`train-*`, model.fit's Python side), native threads
(TensorFlow's pools, which do the training's arithmetic), page-script threads (Streamlit's
ScriptRunner: page and fragment runs), the event loop, other Python threads, and threads that
exited between samples; the browser's CPU (Chromium, Playwright's driver) and everyone
else's on this shared machine. The server is started through bench/_thread_names.py
(`python -m streamlit` plus a thread that lists the Python threads' names into a file) so the
threads can be told apart; `--plain-launch` starts it exactly as `python -m streamlit run`.
First, without a server, the live panel's own pieces (snapshot, the three charts, their JSON)
are timed in this process (`--no-micro` skips it).

The browser runs here, on the same 2 cores as the server; on a real lab it runs on the
viewers' machines. By default it runs at the server's priority (the everything-on-one-box
case: its CPU, in the "browser" column, is taken from training too). `--browser-nice 19` keeps
Chromium (its threads and its scheduler autogroup: Playwright starts it in a session of its
own) and Playwright's driver to CPU nobody else wants, re-applied every second (Chromium sets
its processes' priorities itself); on a busy machine that starves the tabs, which then never
load. Either way a loaded side counts only when every tab showed the job and the tabs asked
for about one refresh a second (feed polls plus rerun requests); otherwise the verdict is
inconclusive.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from app_start import CHROMIUM_ARGS, wait_health  # noqa: E402

TARGET_SLOWDOWN = 0.05
LOAD_DELIVERED_MSGS = 0.8  # refreshes (feed polls + rerun requests) per tab per second (the panel asks for 1)
DEFAULT_ARTIFACTS = Path(tempfile.gettempdir()) / "load-bench-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}  # the Train page's two columns, as the browser tests use
LIVE = '[data-testid="stElementContainer"]:not([data-stale="true"])'  # not a leftover of a rerun
RUN_ID = r"\d{8}-\d{6}-[0-9a-f]+"
FINAL = ("completed", "stopped", "failed")
CLK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
THREAD_NAMES_ENV = "BENCH_THREAD_NAMES"
BATCH_TAG = "batch_loss"  # written by cifar_core.training.progress.make_tensorboard every TENSORBOARD_BATCH_EVERY steps

# Counts websocket messages and live-feed fetches inside the page (no Playwright event per
# request: that would cost the bench process CPU each). Streamlit talks to the server over one
# websocket per tab; the live panel polls app/static/live/<scope>/<run>.json with fetch().
WS_COUNTER = """(() => {
  const counts = {sent: 0, received: 0, receivedBytes: 0, polls: 0, pollsOk: 0, chartFetches: 0};
  Object.defineProperty(window, '__wsCounts', {value: counts});
  const baseFetch = window.fetch;
  window.fetch = function (input, init) {
    const url = String((input && input.url) || input);
    const feed = url.includes('/app/static/live/');
    const progress = feed && !/\\.s\\d\\d-\\w+\\.json/.test(url);
    if (progress) counts.polls++; else if (feed) counts.chartFetches++;
    return baseFetch.apply(this, arguments).then(r => { if (progress && r.ok) counts.pollsOk++; return r; });
  };
  const Base = window.WebSocket;
  class Counted extends Base {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', e => {
        counts.received++;
        const d = e.data;
        counts.receivedBytes += d ? (d.byteLength || d.size || d.length || 0) : 0;
      });
    }
    send(data) { counts.sent++; return super.send(data); }
  }
  window.WebSocket = Counted;
})();"""


# --- /proc readers: CPU and memory of the server, the browser and the machine -------------

def _stat_fields(path: str) -> Optional[tuple[str, list[str]]]:
    """(comm, fields after the comm) of a /proc/.../stat file; fields[0] is the state."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    left, right = text.find("("), text.rfind(")")
    return text[left + 1:right], text[right + 2:].split()


def _cpu_of(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def process_cpu(pid: int) -> Optional[float]:
    """CPU seconds of a whole process (its exited threads included)."""
    got = _stat_fields(f"/proc/{pid}/stat")
    return _cpu_of(got[1]) if got else None


def thread_cpu(pid: int) -> dict[int, float]:
    """tid -> CPU seconds of a process's live threads."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        got = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if got:
            out[int(tid)] = _cpu_of(got[1])
    return out


def machine_busy() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat)."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / CLK


def descendants(root: int, exclude: set[int]) -> dict[int, tuple[str, float, float]]:
    """pid -> (name, CPU s, RSS MB) of every process below `root`, skipping the subtrees of
    `exclude` (the Streamlit server is a child of this process too)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            got = _stat_fields(f"/proc/{name}/stat")
            if got:
                table[int(name)] = (got[0], int(got[1][1]), _cpu_of(got[1]), int(got[1][21]) * PAGE_SIZE_MB)
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in exclude:
            continue
        comm, _, cpu, rss = table[pid]
        out[pid] = (comm, cpu, rss)
        todo += children.get(pid, [])
    return out


def _autogroup(pid: int | str) -> Optional[str]:
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().strip()  # "/autogroup-63 nice 0"
    except OSError:
        return None


def renice(pids, nice: int) -> None:
    """Every thread of these processes to niceness `nice` (Linux: niceness is per thread), and
    their scheduler autogroup too when it is not this process's own: with autogroups on
    (/proc/sys/kernel/sched_autogroup_enabled), Playwright starts Chromium in a session of its
    own, which competes with the server's session as a group whatever its threads' niceness."""
    own = _autogroup("self")
    done: set[str] = set()
    for pid in pids:
        group = _autogroup(pid)
        if group and group != own and group not in done:
            done.add(group)
            if not group.endswith(f" nice {nice}"):
                try:
                    Path(f"/proc/{pid}/autogroup").write_text(str(nice))
                except OSError:
                    pass
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                if os.getpriority(os.PRIO_PROCESS, int(tid)) != nice:
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except OSError:
                pass


THREAD_KINDS = ("fit", "script", "loop", "py_other", "native", "exited")
THREAD_KIND_TITLES = {"fit": "training thread", "script": "page scripts", "loop": "event loop",
                      "py_other": "other Python threads", "native": "native threads (TensorFlow)",
                      "exited": "exited threads"}


def thread_kind(name: Optional[str]) -> str:
    """A server thread's kind from its Python name (None: a thread Python never listed)."""
    if name is None:
        return "native"
    if name.startswith("train-"):
        return "fit"  # cifar_core.training.TrainingJob's thread: model.fit and its callbacks
    if name.startswith("ScriptRunner"):
        return "script"  # Streamlit runs page scripts and fragments here
    if name == "MainThread":
        return "loop"  # Streamlit's server event loop (websockets)
    return "py_other"


class CpuMeter:
    """Cumulative CPU of the server by thread kind, the browser's processes and the whole
    machine, sampled on demand. Browser processes are re-niced here."""

    def __init__(self, server_pid: int, names_file: Optional[Path], browser_nice: int):
        self.server_pid = server_pid
        self.names_file = names_file
        self.browser_nice = browser_nice
        self.names: dict[int, str] = {}
        self._threads: dict[int, float] = {}
        self._browser: dict[int, float] = {}
        self.samples: list[dict[str, float]] = []

    @property
    def by_kind(self) -> bool:
        return bool(self.names)

    def _learn_names(self) -> None:
        if self.names_file is None:
            return
        try:
            self.names.update({int(tid): name for tid, name in json.loads(self.names_file.read_text()).items()})
        except (OSError, ValueError):
            pass

    def sample(self) -> dict[str, float]:
        self._learn_names()
        self._threads.update(thread_cpu(self.server_pid))
        total = process_cpu(self.server_pid) or 0.0
        kinds = dict.fromkeys(THREAD_KINDS, 0.0)
        for tid, cpu in self._threads.items():
            kinds[thread_kind(self.names.get(tid))] += cpu
        kinds["exited"] = max(0.0, total - sum(kinds.values()))  # threads gone between two samples
        procs = descendants(os.getpid(), {self.server_pid})
        if self.browser_nice > 0:
            renice(procs, self.browser_nice)
        for pid, (_, cpu, _) in procs.items():
            self._browser[pid] = max(cpu, self._browser.get(pid, 0.0))
        s = {"t": time.perf_counter(), "wall": time.time(), "server": total,
             **{f"server_{k}": v for k, v in kinds.items()},
             "browser": sum(self._browser.values()), "browser_rss_mb": sum(r for _, _, r in procs.values()),
             "bench": process_cpu(os.getpid()) or 0.0, "machine": machine_busy(),
             "server_rss_mb": C.rss_mb(self.server_pid) or 0.0}
        self.samples.append(s)
        return s

    def window(self, t0: float, t1: float) -> dict[str, Optional[float]]:
        """Cores in use on average between wall times t0 and t1 (the samples nearest to them)."""
        if len(self.samples) < 2:
            return {}
        a = min(self.samples, key=lambda s: abs(s["wall"] - t0))
        b = min(self.samples, key=lambda s: abs(s["wall"] - t1))
        dt = b["t"] - a["t"]
        if dt <= 0:
            return {}
        d = {k: (b[k] - a[k]) / dt for k in a if k not in ("t", "wall", "browser_rss_mb", "server_rss_mb")}
        out = {"server_cores": d["server"], "browser_cores": d["browser"],
               "others_cores": d["machine"] - d["server"] - d["browser"] - d["bench"],
               "idle_cores": (os.cpu_count() or 2) - d["machine"]}
        if self.by_kind:
            out.update({f"{k}_cores": d[f"server_{k}"] for k in THREAD_KINDS})
        return out


# --- the job's speed from its TensorBoard events ---------------------------------------------

def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a serialized protobuf message."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = _varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"protobuf wire type {w}")
        yield f, w, v


def batch_events(run_dir: Path) -> list[tuple[int, float]]:
    """(global step, wall time) of each batch-loss scalar in the run's TensorBoard train events:
    TFRecords of tensorflow.Event (wall_time = 1, step = 2, summary = 5 -> value = 1 -> tag = 1)."""
    out = []
    for path in sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i + 12 <= len(data):
            n = struct.unpack_from("<Q", data, i)[0]
            if i + 16 + n > len(data):
                break  # a record still being written
            record, i = data[i + 12:i + 12 + n], i + 16 + n
            wall, step, tags = None, 0, []
            for f, w, v in _fields(record):
                if f == 1 and w == 1:
                    wall = struct.unpack("<d", v)[0]
                elif f == 2 and w == 0:
                    step = v
                elif f == 5 and w == 2:
                    tags += [v3.decode(errors="replace") for _, w2, v2 in _fields(v) if w2 == 2
                             for f3, w3, v3 in _fields(v2) if f3 == 1 and w3 == 2]
            if BATCH_TAG in tags and wall is not None:
                out.append((step, wall))
    return sorted(set(out))


def images_done(step: int, batches_per_epoch: int, train_images: int, batch_size: int) -> int:
    epochs, within = divmod(step, batches_per_epoch)
    return epochs * train_images + min(within * batch_size, train_images)


def train_rate(events: list[tuple[int, float]], t0: float, t1: float, train_images: int,
               batch_size: int) -> dict[str, Any]:
    """Training images/s between wall times t0 and t1 from consecutive batch events, leaving out
    the gaps that cross an epoch's end (validation and checkpoint happen there)."""
    per_epoch = -(-train_images // batch_size)
    inside = [(s, t) for s, t in events if t0 <= t <= t1]
    images = seconds = 0.0
    gaps = 0
    for (sa, ta), (sb, tb) in zip(inside, inside[1:]):
        if (sa - 1) // per_epoch != (sb - 1) // per_epoch or tb <= ta:
            continue
        images += images_done(sb, per_epoch, train_images, batch_size) - images_done(sa, per_epoch, train_images, batch_size)
        seconds += tb - ta
        gaps += 1
    out: dict[str, Any] = {"events_in_window": len(inside), "gaps_used": gaps, "steps_in_window": None}
    if inside:
        out["steps_in_window"] = inside[-1][0] - inside[0][0]
    if gaps:
        out["img_s"] = images / seconds
        return out
    # fewer than two events inside: the events around the window (a slow side), validation included
    before = [(s, t) for s, t in events if t < t0]
    after = [(s, t) for s, t in events if t > t1]
    a = before[-1] if before else (inside[0] if inside else None)
    b = after[0] if after else (inside[-1] if inside else None)
    if a and b and b[1] > a[1]:
        out["img_s"] = (images_done(b[0], per_epoch, train_images, batch_size)
                        - images_done(a[0], per_epoch, train_images, batch_size)) / (b[1] - a[1])
        out["note"] = f"coarse: steps {a[0]}->{b[0]} over {b[1] - a[1]:.0f} s around the window"
    else:
        out["img_s"] = 0.0
        out["note"] = "no batch event around the window: no measurable progress"
    return out


# --- the server and its tabs ---------------------------------------------------------------

class Lab:
    """One `streamlit run dashboard.py` and the browser tabs on it."""

    def __init__(self, browser, args, artifacts: Path, source: str, label: str):
        self.browser, self.args, self.artifacts, self.label = browser, args, artifacts, label
        runs_dir = artifacts / "runs"
        shutil.rmtree(runs_dir, ignore_errors=True)  # cache/ (the decoded images) stays
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.port = C.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = artifacts / f"streamlit-{label}.log"
        self.names_file = None if args.plain_launch else artifacts / f"threads-{label}.json"
        env = {**os.environ, C.ARTIFACTS_ENV: str(artifacts), C.DATA_ENV: source, "PYTHONUNBUFFERED": "1"}
        launcher = ["-m", "streamlit"]
        if self.names_file is not None:
            env[THREAD_NAMES_ENV] = str(self.names_file)
            launcher = [str(C.BENCH_DIR / "_thread_names.py")]
        cmd = [sys.executable, *launcher, "run", "dashboard.py", "--server.headless", "true",
               "--server.port", str(self.port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false"]
        if args.server_cpus:  # the server (training and serving) on these CPUs only
            cmd = ["taskset", "-c", args.server_cpus, *cmd]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=C.REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.contexts: list = []
        self.pages: list = []
        self.pollers: list[Poller] = []
        self.trainer: Optional[subprocess.Popen] = None  # a CLI job's process (--soak-trainer cli)
        self.trainer_log = None
        wait_health(self.port, self.proc, args.timeout)
        self.cpu = CpuMeter(self.proc.pid, self.names_file, args.browser_nice)

    def open_tab(self, path: str, wait: bool = True):
        context = self.browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(self.args.timeout * 1000)
        context.add_init_script(WS_COUNTER)
        page = context.new_page()
        self.contexts.append(context)
        self.pages.append(page)
        try:
            page.goto(self.url + path, wait_until="load" if wait else "commit",
                      timeout=None if wait else 10_000)
        except Exception:
            if wait:
                raise  # a watcher's navigation carries on; open_watchers waits for what it shows
        return page

    def close_tabs(self) -> None:
        for context in self.contexts:
            try:
                context.close()
            except Exception:
                pass
        self.contexts, self.pages = [], []

    def pause(self, seconds: float) -> None:
        """Sleep, letting Playwright deliver its events meanwhile when a tab is open."""
        if self.pages:
            self.pages[0].wait_for_timeout(seconds * 1000)
        else:
            time.sleep(seconds)

    def sample_for(self, seconds: float, every: float = 1.0) -> None:
        end = time.perf_counter() + seconds
        while True:
            self.cpu.sample()
            left = end - time.perf_counter()
            if left <= 0:
                return
            self.pause(min(every, left))

    def ws_counts(self) -> list[dict[str, float]]:
        out = [dict(p.counts) for p in self.pollers]
        for page in self.pages:
            try:
                out.append(page.evaluate("() => ({...window.__wsCounts})"))
            except Exception:
                out.append({})
        return out

    def run_dir(self, run_id: str) -> Path:
        return self.artifacts / "runs" / run_id

    def status(self, run_id: str) -> Optional[str]:
        return (read_json(self.run_dir(run_id) / "status.json") or {}).get("status")

    def stop_job(self, run_id: str) -> dict[str, Any]:
        """Close every tab, then press Stop in a fresh one, as a person would; wait for the end."""
        self.close_tabs()
        t = time.perf_counter()
        out: dict[str, Any] = {}
        if self.status(run_id) not in FINAL:
            page = self.open_tab("/train")
            stop = page.locator(LIVE).get_by_role("button", name="Stop", exact=True)
            try:
                _expect()(stop).to_be_enabled(timeout=self.args.timeout * 1000)
                stop.click()
            except Exception as exc:  # finished meanwhile, or the page never came
                out["stop_problem"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            while time.perf_counter() - t < self.args.timeout and self.status(run_id) not in FINAL:
                self.pause(0.5)
            self.close_tabs()
        out.update(final_status=self.status(run_id), stop_s=time.perf_counter() - t)
        return out

    def close(self) -> None:
        for poller in self.pollers:
            poller.stop()
        self.pollers = []
        self.close_tabs()
        if self.trainer is not None:
            if self.trainer.poll() is None:  # Stop did not reach it: no orphan job left training
                self.trainer.terminate()
            self.trainer.wait(timeout=60)
            self.trainer_log.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        if not self.args.keep_logs:
            self.log_path.unlink(missing_ok=True)
            if self.names_file is not None:
                self.names_file.unlink(missing_ok=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _expect():
    from playwright.sync_api import expect
    return expect


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def status_line(page, run_id: str = RUN_ID, status: str = r"\w+"):
    """The run's status line: the browser-drawn live panel's (.cl-status) or the page's."""
    return page.locator(f'{LIVE} [data-testid="stMarkdownContainer"], {LIVE} .cl-status').filter(
        has_text=re.compile(rf"^Run {run_id} {status} —")).first


def start_job(lab: Lab, page, source: str, epochs: int) -> str:
    """Fill the Train form as a person would, press Start, return the run id once it is active."""
    expect = _expect()
    ms = lab.args.timeout * 1000
    expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible(timeout=ms)
    start = page.locator(LIVE).get_by_role("button", name="Start training")
    expect(start).to_be_enabled(timeout=ms)
    expect(page.get_by_role("combobox", name="Data source")).to_have_value(source, timeout=ms)
    for label, value in (("Epochs", epochs), ("Batch size", lab.args.batch_size),
                         ("Train images", lab.args.train_images), ("Test images", lab.args.test_images)):
        field = page.get_by_label(label, exact=True)
        field.fill(str(value))
        field.press("Tab")  # commit; Enter would submit the form
        expect(field).to_have_value(str(value))
    start.click()
    line = status_line(page, status="(preparing|running)")
    expect(line).to_be_visible(timeout=ms)
    return re.search(rf"Run ({RUN_ID})", line.inner_text()).group(1)


def script_state(page) -> str:
    """Streamlit's run state of a tab (its root element's data-test-script-state), or why not."""
    try:
        if page.get_by_role("heading", name="Train", exact=True).count() == 0:
            return "no title yet"
        return page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state", timeout=5000) or "?"
    except Exception as exc:
        return type(exc).__name__


def open_watchers(lab: Lab, run_id: str, count: int) -> dict[str, Any]:
    """Open tabs on /train until `count` tabs are open (all navigations first, as viewers arriving
    together), then wait, up to --tabs-timeout in all, for each to show the job. A tab that is not
    showing it by then stays open (it is still loading: load all the same) and is counted, with
    its state."""
    t = time.perf_counter()
    new = [lab.open_tab("/train", wait=False) for _ in range(count - len(lab.pages))]
    lab.cpu.sample()  # re-nices the new renderers at once
    pending, ready, last = list(new), len(lab.pages) - len(new), None
    while pending and time.perf_counter() - t < lab.args.tabs_timeout:
        for page in list(pending):
            try:
                shown = status_line(page, run_id, "(preparing|running)").is_visible()
            except Exception:
                shown = False
            if shown:
                pending.remove(page)
                ready += 1
                last = time.perf_counter() - t
        lab.cpu.sample()
        if pending:
            lab.pause(1.0)
    states: dict[str, int] = {}
    for page in pending:
        state = script_state(page)
        states[state] = states.get(state, 0) + 1
    return {"tabs_ready": ready, "tabs_ready_s": last,
            "tabs_not_ready": ", ".join(f"{n} {k}" for k, n in states.items()) or None}


class Poller:
    """A Train tab's live panel without a browser (--pollers): from a thread of this process (on
    the browser's CPUs), it fetches the run's progress file once a second and the charts file
    whenever the progress names newer curves: the requests cifar_ui/progress_panel.py makes, at the
    nominal rate, with no rendering. Streamlit's websocket of a watching tab stays idle meanwhile
    (the page reruns only at an epoch's end), so it is left out."""

    def __init__(self, base_url: str, artifacts: Path, run_id: str):
        import hashlib
        import random
        import threading

        scope = hashlib.sha1(str(Path(artifacts).expanduser().resolve()).encode()).hexdigest()[:12]
        base = f"{base_url}/app/static/live/{scope}/{run_id}"
        self.progress_url, self.figures_url = f"{base}.json", f"{base}.s60-epoch.json"  # the default chart setting
        self.counts = {"sent": 0, "received": 0, "receivedBytes": 0, "polls": 0, "pollsOk": 0, "chartFetches": 0}
        self._stop = threading.Event()
        self._offset = random.random()  # tabs do not all poll at the same instant
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _get(self, url: str) -> bytes:
        import urllib.request
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read()

    def _loop(self) -> None:
        drawn = -1
        due = time.monotonic() + self._offset
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due += 1.0
            self.counts["polls"] += 1
            try:
                doc = json.loads(self._get(self.progress_url))
                self.counts["pollsOk"] += 1
                if doc.get("charts", -1) > drawn:
                    self._get(self.figures_url)
                    self.counts["chartFetches"] += 1
                    drawn = doc["charts"]
            except (OSError, ValueError):
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def errors_shown(lab: Lab) -> int:
    return sum(p.locator('[data-testid="stException"]').count() for p in lab.pages)


def start_cli_job(lab: Lab, source: str, epochs: int) -> str:
    """The job trained by `python -m cifar_core train` in a process of its own (--soak-trainer cli),
    on the server's CPUs; the server only serves the tabs (its Train page reads the job's live.json)."""
    args = lab.args
    cmd = [sys.executable, "-m", "cifar_core", "train", "--data", source, "--epochs", str(epochs),
           "--batch-size", str(args.batch_size), "--train-subset", str(args.train_images),
           "--test-subset", str(args.test_images), "--name", f"bench-{lab.label}"]
    if args.server_cpus:
        cmd = ["taskset", "-c", args.server_cpus, *cmd]
    env = {**os.environ, C.ARTIFACTS_ENV: str(lab.artifacts), "PYTHONUNBUFFERED": "1"}
    lab.trainer_log = open(lab.artifacts / f"trainer-{lab.label}.log", "w")
    lab.trainer = subprocess.Popen(cmd, cwd=C.REPO_ROOT, env=env, stdout=lab.trainer_log, stderr=subprocess.STDOUT)
    t = time.perf_counter()
    while time.perf_counter() - t < args.timeout:
        found = [d.name for d in (lab.artifacts / "runs").iterdir() if re.fullmatch(RUN_ID, d.name)]
        if found:
            return found[0]
        if lab.trainer.poll() is not None:
            break
        lab.pause(0.5)
    raise RuntimeError(f"the CLI job made no run folder (exit {lab.trainer.poll()})")


def launch_job(browser, args, artifacts: Path, source: str, tabs: int, label: str, epochs: int):
    """A fresh server with a job started from a tab (or, for the soak with --soak-trainer cli, by
    the CLI in a process of its own) and `tabs` tabs watching it (0: none left open)."""
    lab = Lab(browser, args, artifacts, source, label)
    info: dict[str, Any] = {"tabs_ready": 0}
    try:
        lab.cpu.sample()
        if label == "soak" and args.soak_trainer == "cli":
            run_id = start_cli_job(lab, source, epochs)
        else:
            starter = lab.open_tab("/train")
            run_id = start_job(lab, starter, source, epochs)
        # Training under way first (TensorFlow imported, data loaded, the model traced, one epoch
        # trained with the starting tab watching), so the tabs below meet a running job.
        t = time.perf_counter()
        history = lab.run_dir(run_id) / "history.json"
        while not (read_json(history) or {}).get("train_seconds"):
            if lab.status(run_id) in FINAL or time.perf_counter() - t > args.first_epoch_timeout:
                raise RuntimeError(f"{label}: the job's first epoch did not end within {args.first_epoch_timeout:g} s "
                                   f"(status {lab.status(run_id)})")
            lab.cpu.sample()
            lab.pause(1.0)
        info["first_epoch_s"] = time.perf_counter() - t
        if args.pollers:
            # The starting tab stays open on both sides: the feed runs only while a browser session
            # shows the run, so pollers alone would read files nobody keeps fresh. The ratio is then
            # the requests' cost, the feed's own paid on both sides.
            lab.pollers = [Poller(lab.url, artifacts, run_id) for _ in range(tabs)]
            t_ready = time.perf_counter()
            while sum(p.counts["pollsOk"] > 0 for p in lab.pollers) < tabs and time.perf_counter() - t_ready < 30:
                lab.pause(0.5)
            info.update(tabs_ready=sum(p.counts["pollsOk"] > 0 for p in lab.pollers),
                        tabs_ready_s=time.perf_counter() - t_ready)
        elif tabs:
            info.update(open_watchers(lab, run_id, tabs))
        else:
            lab.close_tabs()  # nothing polls from here on
    except BaseException:
        print(f"{label}: failed to start; server log tail:\n{lab.log_tail()}", flush=True)
        lab.close()
        raise
    return lab, run_id, info


def ws_rates(before: list[dict], after: list[dict], seconds: float) -> dict[str, Optional[float]]:
    pairs = [(a, b) for a, b in zip(before, after) if "sent" in a and "sent" in b]
    if not pairs or seconds <= 0:
        return {}
    sent = [(b["sent"] - a["sent"]) / seconds for a, b in pairs]
    recv = [(b["received"] - a["received"]) / seconds for a, b in pairs]
    kb = [(b["receivedBytes"] - a["receivedBytes"]) / seconds / 1024 for a, b in pairs]
    polls = [(b.get("pollsOk", 0) - a.get("pollsOk", 0)) / seconds for a, b in pairs]
    charts = [(b.get("chartFetches", 0) - a.get("chartFetches", 0)) / seconds for a, b in pairs]
    refresh = [p + q for p, q in zip(sent, polls)]
    return {"tab_sent_per_s": statistics.median(sent), "tab_sent_min_per_s": min(sent),
            "tab_recv_per_s": statistics.median(recv), "tab_kb_per_s": statistics.median(kb),
            "tab_polls_per_s": statistics.median(polls), "tab_chart_fetches_per_s": statistics.median(charts),
            "tab_refresh_per_s": statistics.median(refresh), "tab_refresh_min_per_s": min(refresh)}


# --- one side: a job watched by N tabs ----------------------------------------------------------

def one_side(browser, args, artifacts: Path, source: str, tabs: int, round_no: int) -> dict[str, Any]:
    label = f"r{round_no}-{tabs}tabs"
    row: dict[str, Any] = {"round": round_no, "tabs": tabs}
    t_launch = time.perf_counter()
    lab, run_id, info = launch_job(browser, args, artifacts, source, tabs, label, args.epochs)
    burner = None
    if tabs == 0 and args.burn_zero:  # the control: the browser's core as busy, no tab on the server
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(burner.pid, {int(c) for c in (args.browser_cpus or "1").split(",")})
        row["burner"] = True
    try:
        row.update(run_id=run_id, **info)
        row["ready_after_launch_s"] = time.perf_counter() - t_launch
        lab.sample_for(args.warmup_seconds)
        t0, ws0 = time.time(), lab.ws_counts()
        lab.sample_for(args.measure_seconds)
        t1, ws1 = time.time(), lab.ws_counts()
        if burner is not None:
            burner.kill()
            burner.wait()
            burner = None
        row["status_at_end"] = lab.status(run_id)
        row["errors_shown"] = errors_shown(lab) if tabs else 0
        row.update(ws_rates(ws0, ws1, t1 - t0))
        row.update(lab.cpu.window(t0, t1))
        add_serving(row)
        row["server_rss_mb"] = lab.cpu.samples[-1]["server_rss_mb"]
        row.update(lab.stop_job(run_id))
        run_dir = lab.run_dir(run_id)
        history = read_json(run_dir / "history.json") or {}
        row["epochs_done"] = len(history.get("train_seconds", []))
        row.update(train_rate(batch_events(run_dir), t0, t1, args.train_images, args.batch_size))
    except BaseException:
        print(f"{label}: failed; server log tail:\n{lab.log_tail()}", flush=True)
        raise
    finally:
        if burner is not None:
            burner.kill()
        lab.close()
    return row


# --- the soak ---------------------------------------------------------------------------------

def soak(browser, args, artifacts: Path, source: str) -> dict[str, Any]:
    lab, run_id, info = launch_job(browser, args, artifacts, source, args.tabs, "soak", args.soak_epochs)
    samples: list[dict[str, Any]] = []
    out: dict[str, Any] = {"run_id": run_id, "samples": samples, **info}
    print(f"  {info.get('tabs_ready')} tabs showing the job"
          f"{' after ' + format(info['tabs_ready_s'], '.0f') + ' s' if info.get('tabs_ready_s') else ''}"
          f"{'; not yet: ' + info['tabs_not_ready'] if info.get('tabs_not_ready') else ''}", flush=True)
    try:
        t0 = time.perf_counter()
        prev, prev_ws = lab.cpu.sample(), lab.ws_counts()
        k = 0
        while True:
            s, ws = (lab.cpu.sample(), lab.ws_counts()) if k else (prev, prev_ws)
            dt = s["t"] - prev["t"]
            history = read_json(lab.run_dir(run_id) / "history.json") or {}
            status = lab.status(run_id)
            cores = lambda key: (s[key] - prev[key]) / dt if dt > 0 else None  # noqa: E731
            samples.append({
                "minute": (time.perf_counter() - t0) / 60, "wall": s["wall"], "server_rss_mb": s["server_rss_mb"],
                "server_cores": cores("server"), "fit_cores": cores("server_fit") if lab.cpu.by_kind else None,
                "script_cores": cores("server_script") if lab.cpu.by_kind else None,
                "browser_rss_mb": s["browser_rss_mb"], "epochs_done": len(history.get("train_seconds", [])),
                "trainer_rss_mb": C.rss_mb(lab.trainer.pid) if lab.trainer is not None else None,
                "status": status, **({"tab_refresh_per_s": ws_rates(prev_ws, ws, dt).get("tab_refresh_per_s")} if k else {}),
            })
            r = samples[-1]
            print(f"  soak {r['minute']:5.1f} min: server RSS {r['server_rss_mb']:.0f} MB "
                  f"({r['server_rss_mb'] - samples[0]['server_rss_mb']:+.0f}), server {C.fmt(r['server_cores'])} cores, "
                  f"epochs {r['epochs_done']}, tab refreshes/s {C.fmt(r.get('tab_refresh_per_s'))}"
                  f"{'' if r['trainer_rss_mb'] is None else ', CLI trainer RSS ' + format(r['trainer_rss_mb'], '.0f') + ' MB'}",
                  flush=True)
            prev, prev_ws = s, ws
            if status in FINAL:
                out["ended_early"] = status
                break
            k += 1
            if k * args.sample_seconds > args.soak_minutes * 60 + 1e-6:
                break
            left = t0 + k * args.sample_seconds - time.perf_counter()
            if left > 0:
                lab.sample_for(left, every=5.0)  # CPU in between, so exiting threads keep their count
        out["errors_shown"] = errors_shown(lab)
        out.update(lab.stop_job(run_id))  # closes the tabs first
        time.sleep(args.after_close_seconds)
        out["rss_tabs_closed_mb"] = C.rss_mb(lab.proc.pid)
        events = batch_events(lab.run_dir(run_id))
        for a, b in zip(samples, samples[1:]):
            b["train_img_s"] = train_rate(events, a["wall"], b["wall"], args.train_images, args.batch_size).get("img_s")
    finally:
        lab.close()
    return out


# --- main ----------------------------------------------------------------------------------------

def niced_chromium(chromium: str, nice: int, folder: Path, cpus: str = "") -> str:
    """A launcher that starts Chromium at niceness `nice` (its children inherit it, until Chromium
    sets a process's priority itself; CpuMeter re-applies it every sample) and, with `cpus`, on
    those CPUs only (children inherit the affinity)."""
    if nice <= 0 and not cpus:
        return chromium
    script = folder / "chromium-niced"
    pin = f"taskset -c {cpus} " if cpus else ""
    script.write_text(f'#!/bin/sh\nexec {pin}nice -n {int(nice)} {chromium} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def warm_cache(source: str, artifacts: Path) -> Optional[float]:
    """Decode a local source into the artifacts cache once, outside every measurement."""
    if source in ("synthetic", "keras"):
        return None
    t = time.perf_counter()
    code = ("from cifar_core import data; from cifar_core.paths import cache_dir; "
            f"d = data.load_dataset({source!r}, cache_dir=cache_dir()); print(len(d.x_train), len(d.x_test))")
    env = {**os.environ, C.ARTIFACTS_ENV: str(artifacts)}
    subprocess.run([sys.executable, "-c", code], cwd=C.REPO_ROOT, env=env, check=True)
    return time.perf_counter() - t


def live_panel_micro(epochs: int = 30, repeats: int = 10) -> list[dict[str, Any]]:
    """CPU ms of the live panel's own pieces, in this process, for a JobState holding
    MAX_BATCH_POINTS batch points and `epochs` epochs, as a long job has. "per tab" pieces run
    for every open Train tab (the progress every second, the charts every CURVES_SECONDS);
    "shared" pieces once per publish for all tabs (cifar_ui/running.py caches the figures by
    version). The first rows are what each tab did every second before the shared cache (a deep
    copy of the state and three figures built from 2,000 points); "fragments" the page-drawn panel
    with the shared cache (Streamlit's own work per rerun, ~27 ms, comes on top); "feed" the
    browser-drawn panel's files (cifar_ui/browser_feed.py), written once for every tab: a tab then
    costs the server only the static file it fetches."""
    import hashlib
    import random
    import tempfile

    import plotly.io as pio
    import plotly.tools

    from cifar_core import charts, runs
    from cifar_core.training import state as jobstate, publisher as live
    from cifar_core.config import TrainConfig
    from cifar_ui import browser_feed

    state = jobstate.JobState("micro", TrainConfig(), {}, 0)
    rng = random.Random(0)
    for i in range(jobstate.MAX_BATCH_POINTS):
        state.add_batch(i / 79, rng.random(), rng.random())
    for e in range(epochs):
        state.add_epoch({"loss": 1 / (e + 1), "accuracy": e / epochs, "val_loss": 1.1 / (e + 1),
                         "val_accuracy": e / epochs, "train_seconds": 10.0 * (e + 1)})
    full = state.snapshot()
    view = state.publish()
    figs, old = {}, {}
    folder = Path(tempfile.mkdtemp(prefix="live-micro-"))

    def as_streamlit(fig) -> int:
        """What st.plotly_chart does with a figure: validate/copy to a dict, JSON, hash for the id."""
        spec = pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True), validate=False)
        hashlib.md5(spec.encode()).hexdigest()
        return len(spec)

    def build(snap, into):
        into["batch"] = charts.batch_curves(snap.batch_steps, snap.batch_loss, snap.batch_accuracy)
        into["loss"] = charts.epoch_curves(snap.history, "loss")
        into["accuracy"] = charts.epoch_curves(snap.history, "accuracy")

    build(full, old)
    build(view, figs)
    steps = {
        "before, per tab every 1 s: JobState.snapshot (deep copy)": state.snapshot,
        f"before, per tab every 1 s: 3 figures from {len(full.batch_steps)} points": lambda: build(full, old),
        "before, per tab every 1 s: st.plotly_chart of the 3": lambda: [as_streamlit(f) for f in old.values()],
        "fragments, per tab every 1 s: JobState.view (progress)": state.view,
        f"fragments, per tab every {live.PUBLISH_SECONDS:.0f} s: st.plotly_chart of the 3 cached": lambda: [
            as_streamlit(f) for f in figs.values()],
        f"shared every {live.PUBLISH_SECONDS:.0f} s: publish + live.json (the trainer's)": lambda: runs.write_json(
            folder / "live.json", live.to_record(state.publish())),
        f"fragments, shared every {live.PUBLISH_SECONDS:.0f} s: 3 figures from {len(view.batch_steps)} points": lambda: build(
            view, figs),
        "feed, shared every 1 s: progress file": lambda: browser_feed._write(
            folder / "progress.json", json.dumps(browser_feed.progress_doc(state.view(), "micro"))),
        f"feed, shared every {browser_feed.FIGURES_SECONDS:.0f} s: figures file from {len(view.batch_steps)} points": lambda: browser_feed._write(
            folder / "figures.json", browser_feed.figures_json(view, charts.DEFAULT_SMOOTHING, "epoch")),
    }
    rows = []
    for what, fn in steps.items():
        fn()  # warm
        cpu = []
        for _ in range(repeats):
            c = time.thread_time()
            fn()
            cpu.append((time.thread_time() - c) * 1000)
        rows.append({"piece": what, "cpu_ms": statistics.median(cpu)})
    shutil.rmtree(folder, ignore_errors=True)
    per_s = lambda prefix, every: sum(r["cpu_ms"] for r in rows if r["piece"].startswith(prefix)) / every
    before = per_s("before, per tab", 1.0)
    frag_tab = per_s("fragments, per tab every 1", 1.0) + per_s(
        f"fragments, per tab every {live.PUBLISH_SECONDS:.0f}", live.PUBLISH_SECONDS)
    trainer = per_s("shared every", live.PUBLISH_SECONDS)
    frag_shared = per_s("fragments, shared", live.PUBLISH_SECONDS) + trainer
    feed = (per_s("feed, shared every 1", 1.0) + per_s(f"feed, shared every {browser_feed.FIGURES_SECONDS:.0f}",
                                                        browser_feed.FIGURES_SECONDS) + trainer)
    rows += [{"piece": "before: CPU ms per second, 10 tabs", "cpu_ms": 10 * before},
             {"piece": "fragments: CPU ms per second, 10 tabs (shared part once), + Streamlit's reruns",
              "cpu_ms": 10 * frag_tab + frag_shared},
             {"piece": "feed: CPU ms per second, any number of tabs, + serving the files", "cpu_ms": feed},
             {"piece": "JSON KB of the 3 figures per chart refresh, before", "cpu_ms": sum(as_streamlit(f) for f in old.values()) / 1024},
             {"piece": "JSON KB of the 3 figures per chart refresh, now", "cpu_ms": sum(as_streamlit(f) for f in figs.values()) / 1024}]
    return rows


SIDE_KEYS = ("img_s", "tabs_ready", "server_cores", *(f"{k}_cores" for k in THREAD_KINDS), "serving_cores",
             "browser_cores", "others_cores", "idle_cores", "tab_sent_per_s", "tab_recv_per_s", "tab_kb_per_s",
             "tab_polls_per_s", "tab_chart_fetches_per_s", "tab_refresh_per_s", "server_rss_mb")


def add_serving(row: dict[str, Any]) -> None:
    """Server CPU that is not training: page scripts, the event loop, other Python threads."""
    parts = [row.get(f"{k}_cores") for k in ("script", "loop", "py_other")]
    row["serving_cores"] = sum(parts) if all(p is not None for p in parts) else None


def summarize_speed(rows: list[dict[str, Any]], counts: list[int]) -> dict[str, Any]:
    by = {n: {r["round"]: r for r in rows if r["tabs"] == n} for n in counts}
    base = counts[0]
    out: dict[str, Any] = {"baseline_tabs": base, "sides": {}}
    for n in counts:
        side = {k: C.median(r.get(k) for r in by[n].values()) for k in SIDE_KEYS}
        ratios = [by[n][k]["img_s"] / by[base][k]["img_s"] for k in sorted(by[base])
                  if k in by[n] and by[n][k].get("img_s") is not None and by[base][k].get("img_s")]
        side["ratios"] = ratios
        side["ratio"] = C.median(ratios)
        side["slowdown"] = None if side["ratio"] is None else 1 - side["ratio"]
        msgs = (side["tab_refresh_per_s"] or 0) * n
        zero = out["sides"].get(base, side)
        extra = (side["serving_cores"] - zero["serving_cores"]
                 if side["serving_cores"] is not None and zero["serving_cores"] is not None else None)
        side["serving_extra_cores"] = extra
        side["serving_ms_per_tab_message"] = 1000 * extra / msgs if extra is not None and msgs else None
        out["sides"][n] = side
    top_n = counts[-1]
    top = out["sides"][top_n]
    out["ratio"], out["slowdown"] = top["ratio"], top["slowdown"]
    # The load counts as delivered when every tab showed the job and the tabs asked for a refresh
    # about once a second; otherwise a small slowdown may only mean the tabs were not there.
    out["load_delivered"] = bool(all(r.get("tabs_ready") == top_n for r in by[top_n].values())
                                 and (top["tab_refresh_per_s"] or 0) >= LOAD_DELIVERED_MSGS)
    met = None if top["slowdown"] is None else top["slowdown"] <= TARGET_SLOWDOWN
    out["meets_target"] = met if (out["load_delivered"] or met is False) else None
    return out


def summarize_soak(s: dict[str, Any], bound: float) -> dict[str, Any]:
    """RSS moves by tens of MB between samples (allocator arenas, a figure's JSON in flight), so
    growth is also given robustly: median of the last 3 samples minus median of the first 3, and
    the least-squares slope over all samples; the bound applies to the robust growth."""
    samples = s["samples"]
    if not samples:
        return {}
    rss = [r["server_rss_mb"] for r in samples]
    minutes = [r["minute"] for r in samples]
    k = min(3, len(rss))
    robust = statistics.median(rss[-k:]) - statistics.median(rss[:k])
    slope = None
    if len(rss) >= 3 and len(set(minutes)) > 1:
        mx, my = statistics.fmean(minutes), statistics.fmean(rss)
        slope = sum((x - mx) * (y - my) for x, y in zip(minutes, rss)) / sum((x - mx) ** 2 for x in minutes)
    rates = [r.get("train_img_s") for r in samples[1:]]
    msgs = [r.get("tab_refresh_per_s") for r in samples[1:]]
    return {"tabs_ready": s.get("tabs_ready"), "minutes": minutes[-1], "rss_start_mb": rss[0], "rss_end_mb": rss[-1],
            "rss_min_mb": min(rss), "rss_peak_mb": max(rss), "growth_mb": rss[-1] - rss[0],
            "growth_robust_mb": robust, "slope_mb_per_min": slope, "bound_mb": bound, "within_bound": robust <= bound,
            "rss_tabs_closed_mb": s.get("rss_tabs_closed_mb"), "epochs_done": samples[-1]["epochs_done"],
            "train_img_s_median": C.median(rates), "tab_msgs_per_s_median": C.median(msgs),
            "errors_shown": s.get("errors_shown"), "final_status": s.get("final_status"), "stop_s": s.get("stop_s"),
            "ended_early": s.get("ended_early")}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic",
                        help="CIFAR10_DATA for the server: synthetic (default), or an image folder/.tar.gz "
                             "such as /tmp/cifar/cifar10-jpeg")
    parser.add_argument("--artifacts", default=str(DEFAULT_ARTIFACTS),
                        help="scratch CIFAR_ARTIFACTS_DIR; its cache/ is kept, its runs/ emptied before each server")
    parser.add_argument("--tabs", type=int, default=10, help="tabs on /train for the loaded side and the soak")
    parser.add_argument("--also-tabs", type=int, nargs="*", default=[1],
                        help="more tab counts measured in each round between 0 and TABS (default: 1)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (0, ..., TABS tabs); 0 skips the speed part")
    parser.add_argument("--warmup-seconds", type=float, default=15.0,
                        help="after the tabs show the job (its first epoch done), before the window")
    parser.add_argument("--measure-seconds", type=float, default=90.0, help="the window per side")
    parser.add_argument("--epochs", type=int, default=1000, help="the job's epochs (it is stopped after the window)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--soak-minutes", type=float, default=30.0, help="0 skips the soak")
    parser.add_argument("--soak-trainer", choices=("server", "cli"), default="server",
                        help="who trains in the soak: the server (started from a tab, as a person would) or "
                             "`python -m cifar_core train` in a process of its own, so the server's RSS is the "
                             "serving's alone (its Train page follows the job through live.json)")
    parser.add_argument("--soak-epochs", type=int, default=1000, help="the soak job's epochs (it is stopped at the end)")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="RSS sample interval in the soak")
    parser.add_argument("--after-close-seconds", type=float, default=10.0,
                        help="wait after the soak's tabs close and its job stops before the last RSS reading")
    parser.add_argument("--rss-bound-mb", type=float, default=100.0,
                        help="the soak's bound on server RSS growth from its start to its end")
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="niceness of Chromium (its threads and its scheduler autogroup) and Playwright's "
                             "driver; default 0: the same priority as the server. 19 keeps the browser to CPU "
                             "the rest leaves idle, which on a busy machine starves the tabs (they never load)")
    parser.add_argument("--plain-launch", action="store_true",
                        help="start the server as `python -m streamlit run` (no thread names: no training-thread CPU)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for each page step and for Stop")
    parser.add_argument("--first-epoch-timeout", type=float, default=600.0,
                        help="seconds for the job's first epoch, trained before the watcher tabs open")
    parser.add_argument("--tabs-timeout", type=float, default=180.0,
                        help="seconds, in all, for the watcher tabs to show the job (late ones stay open, counted)")
    parser.add_argument("--pollers", action="store_true",
                        help="the loaded sides' N tabs are HTTP pollers making the live panel's requests at its "
                             "nominal rate (1 progress poll/s, charts when newer) instead of Chromium tabs: the "
                             "server's own cost of N watchers, whatever a browser on this machine manages")
    parser.add_argument("--burn-zero", action="store_true",
                        help="control: on the 0-tab sides, a busy loop on the browser CPUs (default CPU 1) keeps "
                             "that core as busy as ten tabs' Chromium does, without a single request to the "
                             "server; the ratio then leaves out what the browser's load alone costs training")
    parser.add_argument("--no-micro", action="store_true",
                        help="skip timing the live panel's pieces (charts, snapshot, JSON) in this process")
    parser.add_argument("--keep-logs", action="store_true", help="keep each server's log in the artifacts folder")
    parser.add_argument("--out", help="results file stem under bench/results/")
    parser.add_argument("--server-cpus", default="",
                        help="run the server (training and serving) on these CPUs only, e.g. 0 (taskset -c); "
                             "with --browser-cpus on the others, the browsers stand in for viewers on other "
                             "machines and the ratio is the server's own cost")
    parser.add_argument("--browser-cpus", default="",
                        help="run Chromium, Playwright's driver and this script on these CPUs only, e.g. 1")
    args = parser.parse_args(argv)
    if args.browser_cpus:  # this script and Playwright's driver (started below) inherit it
        os.sched_setaffinity(0, {int(c) for c in args.browser_cpus.split(",")})

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        C.skip("load_tabs", "no system Chromium on PATH (this benchmark never downloads a browser)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        C.skip("load_tabs", "the playwright Python package is not installed")
    counts = sorted({0, *args.also_tabs, args.tabs})
    source = C.resolve_data(args.data, "load_tabs")
    artifacts = Path(args.artifacts).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    head = C.evidence("load_tabs", C.describe_data(source, args.train_images, args.test_images), {
        "setup": f"fresh `streamlit run dashboard.py` per side; {args.rounds} round(s) of {counts} tabs on /train, "
                 f"alternating; job: assignment network, batch {args.batch_size}, stopped after "
                 f"{args.warmup_seconds:g} s warm-up + {args.measure_seconds:g} s window; soak {args.soak_minutes:g} min "
                 f"with {args.tabs} tabs; Chromium {chromium} headless, nice {args.browser_nice}; "
                 f"server CPUs {args.server_cpus or 'all'}, browser CPUs {args.browser_cpus or 'all'}; artifacts {artifacts}",
    })
    if not args.no_micro:
        micro = live_panel_micro()
        C.print_table(micro, [("piece", "live panel piece (this process)"), ("cpu_ms", "CPU ms per refresh", 1)],
                      title="Live panel: CPU per refresh of one tab, without Streamlit's own work")
    warm = warm_cache(source, artifacts)
    if warm is not None:
        print(f"data cache ready in {warm:.1f} s ({artifacts / 'cache'})\n", flush=True)
    rows: list[dict[str, Any]] = []
    soak_out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=niced_chromium(chromium, args.browser_nice, artifacts, args.browser_cpus),
                                    headless=True, args=CHROMIUM_ARGS)
        try:
            for r in range(1, args.rounds + 1):
                for tabs in counts:
                    row = one_side(browser, args, artifacts, source, tabs, r)
                    rows.append(row)
                    shown = f"{row['tabs_ready']} showing the job" + (
                        f" after {row['tabs_ready_s']:.0f} s" if row.get("tabs_ready_s") else "") + (
                        f"; not yet: {row['tabs_not_ready']}" if row.get("tabs_not_ready") else "")
                    print(f"round {r}, {tabs:2d} tabs ({shown}): "
                          f"{C.fmt(row.get('img_s'), 1)} img/s ({row['gaps_used']} gaps, {row.get('steps_in_window')} steps"
                          f"{'; ' + row['note'] if row.get('note') else ''}); server {C.fmt(row.get('server_cores'))} "
                          f"cores (training thread {C.fmt(row.get('fit_cores'))}, native {C.fmt(row.get('native_cores'))}, "
                          f"page scripts {C.fmt(row.get('script_cores'))}, event loop {C.fmt(row.get('loop_cores'))}, "
                          f"other Python {C.fmt(row.get('py_other_cores'))}, exited {C.fmt(row.get('exited_cores'))}), "
                          f"browser {C.fmt(row.get('browser_cores'))}, others {C.fmt(row.get('others_cores'))}, "
                          f"idle {C.fmt(row.get('idle_cores'))}; per tab: feed polls/s {C.fmt(row.get('tab_polls_per_s'))}, "
                          f"chart fetches/s {C.fmt(row.get('tab_chart_fetches_per_s'))}, "
                          f"msgs sent/s {C.fmt(row.get('tab_sent_per_s'))}; "
                          f"Stop {C.fmt(row.get('stop_s'), 1)} s -> {row.get('final_status')}", flush=True)
            if args.soak_minutes > 0:
                print(f"\nsoak: {args.tabs} tabs on /train for {args.soak_minutes:g} min", flush=True)
                soak_out = soak(browser, args, artifacts, source)
        finally:
            browser.close()
    print()
    payload: dict[str, Any] = {**head, "args": vars(args), "source": source, "runs": rows,
                               "live_panel_micro": None if args.no_micro else micro}
    if rows:
        C.print_table(rows, [
            ("round", "round"), ("tabs", "tabs"), ("tabs_ready", "showing job"), ("tabs_ready_s", "after s", 0),
            ("img_s", "train img/s", 1),
            ("gaps_used", "gaps"), ("server_cores", "server"), ("fit_cores", "training thread"),
            ("native_cores", "native (TF)"), ("script_cores", "page scripts"), ("loop_cores", "event loop"),
            ("py_other_cores", "other Python"), ("exited_cores", "exited threads"), ("browser_cores", "browser"),
            ("others_cores", "others"), ("idle_cores", "idle"), ("tab_polls_per_s", "feed polls/s per tab"),
            ("tab_chart_fetches_per_s", "chart fetches/s per tab"), ("tab_sent_per_s", "msgs sent/s per tab"),
            ("tab_recv_per_s", "msgs recv/s per tab", 1), ("tab_kb_per_s", "KB/s per tab", 0),
            ("server_rss_mb", "server RSS MB", 0), ("errors_shown", "exceptions"), ("stop_s", "Stop s", 1),
        ], title="Training speed per side (alternating, fresh server each; CPU columns in cores, averaged over the window)")
        summary = summarize_speed(rows, counts)
        payload["speed_summary"] = summary
        C.print_table([{"tabs": n, **s, "ratios": " ".join(f"{x:.3f}" for x in s["ratios"]),
                        "slowdown": None if s["slowdown"] is None else f"{100 * s['slowdown']:.1f}%"}
                       for n, s in summary["sides"].items()], [
            ("tabs", "tabs"), ("img_s", "train img/s (median)", 1), ("ratios", "ratio per round"),
            ("ratio", "ratio vs 0 tabs (median)", 3), ("slowdown", "slowdown"),
            ("fit_cores", "training thread"), ("native_cores", "native (TF)"), ("serving_cores", "serving cores"),
            ("serving_extra_cores", "serving beyond 0 tabs"), ("tab_refresh_per_s", "refreshes/s per tab"),
            ("serving_ms_per_tab_message", "serving CPU ms per tab refresh", 1),
        ], title="Summary: speed vs tabs watching (serving = page scripts + event loop + other Python threads)")
        if summary["slowdown"] is not None:
            verdict = {True: "met", False: "MISSED", None: "inconclusive: the tabs' load was not all delivered"}
            print(f"{args.tabs} tabs slow training by {100 * summary['slowdown']:.1f}% "
                  f"(target <= {100 * TARGET_SLOWDOWN:.0f}%): {verdict[summary['meets_target']]}"
                  f"{'' if summary['load_delivered'] else ' (not every tab showed the job, or the tabs asked for fewer than ' + str(LOAD_DELIVERED_MSGS) + ' refreshes/s)'}\n")
    if soak_out:
        payload["soak"] = soak_out
        C.print_table(soak_out["samples"], [
            ("minute", "minute", 1), ("server_rss_mb", "server RSS MB", 0), ("server_cores", "server cores"),
            ("fit_cores", "training thread"), ("script_cores", "page scripts"), ("train_img_s", "train img/s", 1),
            ("epochs_done", "epochs done"),
            ("tab_refresh_per_s", "refreshes/s per tab"), ("browser_rss_mb", "browser RSS MB", 0),
            *([("trainer_rss_mb", "CLI trainer RSS MB", 0)] if args.soak_trainer == "cli" else []),
        ], title=f"Soak: {args.tabs} tabs on /train, server RSS every {args.sample_seconds:g} s"
                 f"{' (training in a CLI process)' if args.soak_trainer == 'cli' else ''}")
        ss = summarize_soak(soak_out, args.rss_bound_mb)
        payload["soak_summary"] = ss
        C.print_table([{"what": k, "value": v} for k, v in ss.items()], [("what", "soak"), ("value", "value", 1)],
                      title="Soak summary")
        if ss:
            print(f"server RSS {ss['rss_start_mb']:.0f} -> {ss['rss_end_mb']:.0f} MB over {ss['minutes']:.1f} min "
                  f"({ss['growth_mb']:+.0f} MB; last 3 vs first 3 samples {ss['growth_robust_mb']:+.0f} MB; slope "
                  f"{C.fmt(ss['slope_mb_per_min'])} MB/min); bound +{args.rss_bound_mb:g} MB: "
                  f"{'held' if ss['within_bound'] else 'EXCEEDED'}\n")
    C.save_results("load_tabs", payload, rows=rows, stem=args.out)


if __name__ == "__main__":
    main()
