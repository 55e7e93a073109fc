"""The "trust it overnight" soak: the real dashboard server and CLI workers share one Optuna sweep
and the run queue for --minutes while workers are killed, queued runs come and go and a browser
presses Start on Train; then every trial, run folder and the server's resources are checked.

What runs (its own artifacts folder, synthetic data):
- one sweep (`sweep create`: learning_rate log range, random sampler, pruner none, SHORT trials:
  --epochs of --train-images / --test-images). Its trial limit is far beyond what fits, so it never
  runs dry; the soak ends it with the Sweeps page's **Stop sweep** and asserts that at least
  --trials trials reached a final outcome.
- the real `streamlit run dashboard.py` (headless, a free loopback port, CIFAR_ARTIFACTS_DIR set),
  made to work on the sweep with **Start on this server** on its Sweeps page in headless Chromium;
  that tab stays open on Sweeps (its live table refreshes every 5 s) for the whole soak;
- two CLI workers `python -m cifar_core sweep run NAME`, and a `queue run` worker started whenever
  the queue has waiting runs and none runs (it exits when the queue is empty);
- every --kill-every seconds (jittered) SIGKILL to a CLI worker (one holding a trial's job when
  there is one), then a new worker in its place; the killed worker's job process must stop itself
  (bound to its parent) and Optuna's heartbeat must have the trial retried elsewhere. Once, at
  --kill-server-at minutes, SIGKILL to the server, which is started again (and started on the
  sweep again from its page);
- every --queue-every seconds a queued run is added (`studies.enqueue`) or one is removed
  (`studies.remove`), alternately; every --train-every seconds a fresh tab fills Train (a tiny
  synthetic run named soak-train-N) and presses Start: a Start disabled or refused because the
  machine is busy is a valid outcome, recorded as such;
- every --sample-seconds: the server's RSS, CPU seconds, open files and threads (/proc), journal
  lines, trials by state and what holds the trainer lock.

Heartbeat: `--heartbeat`/`--grace` shorten Optuna's liveness (cifar_core.sweeps.storage's
HEARTBEAT_SECONDS / GRACE_SECONDS, module constants without an environment variable) in the server
and the workers: each is started through this file's `--boot HB GRACE -- -m MODULE ARGS`, which
sets them and then runs the module as `python -m` would.

The end: the chaos stops at --minutes; the soak waits (up to --drain-seconds) until no trial is
RUNNING for a dead worker, presses Stop sweep, sends SIGTERM to the CLI workers (their trials
return to the study), removes every waiting queued run, waits for the server's last trial, stops
the server with SIGTERM. Checks (any failure: exit 1, each printed as FAIL):
1. every trial is complete, pruned, or failed with a reason: user attr "error", or retried by a
   later trial (its number in that trial's system attr retry_history), or an empty pop; a WAITING
   trial is allowed only as a retry returned at the end or a removed queued run; nothing RUNNING;
2. each line of trials (a trial and its retries, by system attr failed_trial) ends exactly once,
   and at least --trials sweep lines ended;
3. no trial was trained twice: each trial number has at most one run folder (status.json's
   `sweep` record), and no two runs of one line overlap in time (started_at..finished_at, or the
   folder's last write for a run without finished_at);
4. every run folder belongs to a trial of the sweep or the queue, or to a Start the soak pressed;
5. journal lines per trial <= JOURNAL_BASE_LINES + 1.5 x (mean trial seconds / heartbeat);
6. over the last half of the soak the server's RSS grew <= --rss-bound-mb, its open files
   <= --fd-bound, its threads <= --thread-bound, and its CPU use (cores, per sample interval) rose
   <= --cpu-bound-cores (least-squares line across the half); first/last values and slopes printed.

    python bench/soak.py                                # 60 minutes, 40+ trials, a kill every ~3 min
    python bench/soak.py --minutes 3 --trials 3 --kill-every 45 --heartbeat 2 --grace 8   # the test's
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--boot":
    # `--boot HB GRACE -- -m MODULE ARGS...`: a server or worker with a shortened heartbeat.
    _root = Path(__file__).resolve().parents[1]
    sys.path[:] = [str(_root)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    from cifar_core.sweeps import storage as _storage

    _storage.HEARTBEAT_SECONDS, _storage.GRACE_SECONDS = float(sys.argv[2]), float(sys.argv[3])
    _rest = sys.argv[sys.argv.index("--") + 1:]
    assert _rest[0] == "-m", _rest
    sys.argv = [_rest[1], *_rest[2:]]
    runpy.run_module(_rest[1], run_name="__main__", alter_sys=True)
    sys.exit(0)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from app_start import CHROMIUM_ARGS, wait_health  # noqa: E402

SWEEP = "soak"
LIVE = '[data-testid="stElementContainer"]:not([data-stale="true"])'
VIEWPORT = {"width": 1400, "height": 1000}
CLK = os.sysconf("SC_CLK_TCK")
JOURNAL_BASE_LINES = 60  # a trial's own lines besides its beats: create, params, user attrs, state, value
SWEEP_LIMIT = 100_000  # the sweep's trial limit: never reached; the soak stops it


# --- small helpers ---------------------------------------------------------------------------

class Tee:
    """Everything printed also goes to the text report."""

    def __init__(self, path: Path):
        self.file = open(path, "w")
        self.stdout = sys.stdout

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        return self.stdout.write(text)

    def flush(self) -> None:
        self.stdout.flush()
        self.file.flush()


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def lscpu() -> dict[str, Any]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return {"model_name": fields.get("Model name") or C.machine_info()["cpu_model"],
            "cpus": fields.get("CPU(s)") or os.cpu_count(),
            "threads_per_core": fields.get("Thread(s) per core"), "cores_per_socket": fields.get("Core(s) per socket")}


def proc_sample(pid: int) -> Optional[dict[str, Any]]:
    """RSS (MB), CPU seconds (user + system, this process's threads), open files and threads of `pid`."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    values = {line.split(":")[0]: line.split(":", 1)[1].split() for line in status.splitlines() if ":" in line}
    return {"rss_mb": int(values["VmRSS"][0]) / 1024, "cpu_s": (int(fields[11]) + int(fields[12])) / CLK,
            "open_files": fds, "threads": int(values["Threads"][0])}


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def line_count(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def slope(points: list[tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of (x, y) points; None for fewer than two distinct x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


# --- the processes -------------------------------------------------------------------------

class Soak:
    def __init__(self, args: argparse.Namespace, artifacts: Path, out: Path):
        self.args, self.artifacts, self.out = args, artifacts, out
        self.logs = artifacts / "soak-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.journal = artifacts / "sweeps" / "journal.log"
        self.env = {**os.environ, C.ARTIFACTS_ENV: str(artifacts), C.DATA_ENV: "synthetic", "PYTHONUNBUFFERED": "1"}
        self.t0 = time.monotonic()
        self.server: Optional[subprocess.Popen] = None
        self.server_started_at = 0.0  # soak seconds
        self.server_log = None
        self.port = 0
        self.server_starts = 0
        self.workers: dict[str, Optional[subprocess.Popen]] = {"sweep-A": None, "sweep-B": None, "queue": None}
        self.worker_starts = 0
        self.worker_exits: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.kills: list[dict[str, Any]] = []
        self.queue_ops: list[dict[str, Any]] = []
        self.train_clicks: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.queue_added = 0
        self.browser = None
        self.watch = None  # the tab on /sweeps
        self.watch_context = None
        self.pw = None
        self.train_names: set[str] = set()
        self.cpu_prev: Optional[tuple[float, float]] = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, kind: str, **data: Any) -> None:
        self.events.append({"t": round(self.now(), 1), "kind": kind, **data})

    def boot(self, *module_args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--boot", str(self.args.heartbeat),
                str(self.args.grace), "--", "-m", *module_args]

    # server
    def start_server(self) -> None:
        self.port = self.port or C.free_port()
        self.server_starts += 1
        self.server_log = open(self.logs / f"server-{self.server_starts}.log", "w")
        cmd = self.boot("streamlit", "run", "dashboard.py", "--server.headless", "true", "--server.port",
                        str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false")
        self.server = subprocess.Popen(cmd, cwd=C.REPO_ROOT, env=self.env, stdout=self.server_log,
                                       stderr=subprocess.STDOUT)
        wait_health(self.port, self.server, self.args.timeout)
        self.server_started_at = self.now()
        self.cpu_prev = None
        self.event("server started", pid=self.server.pid, port=self.port)
        say(f"server pid {self.server.pid} on http://127.0.0.1:{self.port} (start {self.server_starts})")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open_watch_tab(self) -> None:
        """A tab on Sweeps: press Start on this server; it stays open, watching."""
        from playwright.sync_api import expect

        if self.watch_context is not None:
            try:
                self.watch_context.close()
            except Exception:
                pass
        self.watch_context = self.browser.new_context(viewport=VIEWPORT)
        self.watch_context.set_default_timeout(self.args.timeout * 1000)
        self.watch = self.watch_context.new_page()
        self.watch.goto(self.url + "/sweeps")
        ms = self.args.timeout * 1000
        expect(self.watch.get_by_role("heading", name="Sweeps", exact=True)).to_be_visible(timeout=ms)
        start = self.watch.locator(LIVE).get_by_role("button", name="Start on this server")
        expect(start).to_be_enabled(timeout=ms)
        start.click()
        expect(self.watch.locator(LIVE).get_by_text("This server is working on it.")).to_be_visible(timeout=ms)
        self.event("server works on the sweep (Start on this server)")
        say("Sweeps page: Start on this server pressed; the server works on the sweep")

    # workers
    def start_worker(self, slot: str) -> None:
        what = ("queue", "run") if slot == "queue" else ("sweep", "run", SWEEP)
        self.worker_starts += 1
        log = open(self.logs / f"worker-{slot}-{self.worker_starts}.log", "w")
        proc = subprocess.Popen(self.boot("cifar_core", *what), cwd=C.REPO_ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.workers[slot] = proc
        self.event("worker started", slot=slot, pid=proc.pid)

    def reap_workers(self, restart: bool) -> None:
        for slot, proc in self.workers.items():
            if proc is None or proc.poll() is None:
                continue
            killed = any(k["pid"] == proc.pid for k in self.kills)
            if not killed:
                tail = Path(proc.log_path).read_text(errors="replace").strip().splitlines()[-1:]
                self.worker_exits.append({"t": round(self.now(), 1), "slot": slot, "pid": proc.pid,
                                          "rc": proc.returncode, "last_line": tail[0] if tail else ""})
                if slot != "queue" or proc.returncode != 0:
                    say(f"worker {slot} pid {proc.pid} exited {proc.returncode}: {tail[0] if tail else ''}")
            self.workers[slot] = None
            if restart and slot != "queue":
                self.start_worker(slot)

    def queue_waiting(self) -> list[int]:
        from cifar_core.sweeps import studies

        _, study = studies.load(studies.QUEUE)
        return [studies.display_number(t.number) for t in study.get_trials(deepcopy=False)
                if t.state.name == "WAITING" and not t.user_attrs.get("removed")]

    # chaos
    def kill_worker(self, rng: random.Random) -> None:
        live = [(slot, p) for slot, p in self.workers.items() if p is not None and p.poll() is None]
        if not live:
            return
        training = [(slot, p) for slot, p in live if children(p.pid)]
        slot, proc = rng.choice(training or live)
        jobs = children(proc.pid)
        trial = self.trial_of_worker(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        record = {"t": round(self.now(), 1), "slot": slot, "pid": proc.pid, "job_pids": jobs, "trial": trial}
        deadline = time.monotonic() + 60
        while any(alive(j) for j in jobs) and time.monotonic() < deadline:
            time.sleep(0.2)
        record["job_stopped_s"] = round(time.monotonic() - (deadline - 60), 1) if jobs else None
        record["job_still_alive"] = [j for j in jobs if alive(j)]
        self.kills.append(record)
        self.event("SIGKILL worker", **record)
        say(f"SIGKILL worker {slot} pid {proc.pid}" + (f" training {trial} (job {jobs}); its job ended after "
                                                        f"{record['job_stopped_s']} s" if jobs else " (idle)")
            + (f"; JOB STILL ALIVE {record['job_still_alive']}" if record["job_still_alive"] else ""))
        self.workers[slot] = None
        if slot != "queue":
            self.start_worker(slot)

    def kill_server(self) -> None:
        jobs = children(self.server.pid)
        os.kill(self.server.pid, signal.SIGKILL)
        self.server.wait()
        self.server_log.close()
        deadline = time.monotonic() + 60
        while any(alive(j) for j in jobs) and time.monotonic() < deadline:
            time.sleep(0.2)
        record = {"t": round(self.now(), 1), "slot": "server", "pid": self.server.pid, "job_pids": jobs,
                  "job_still_alive": [j for j in jobs if alive(j)]}
        self.kills.append(record)
        self.event("SIGKILL server", **record)
        say(f"SIGKILL server pid {self.server.pid} (job processes {jobs}, still alive after: "
            f"{record['job_still_alive']})")
        self.start_server()
        self.open_watch_tab()

    def trial_of_worker(self, pid: int) -> Optional[str]:
        from cifar_core.sweeps import studies

        for name in (SWEEP, studies.QUEUE):
            try:
                _, study = studies.load(name)
            except Exception:
                continue
            for t in study.get_trials(deepcopy=False):
                if t.state.name == "RUNNING" and (t.user_attrs.get("worker") or {}).get("pid") == pid:
                    return f"{name} #{studies.display_number(t.number)}"
        return None

    def queue_op(self, rng: random.Random) -> None:
        from cifar_core.recipes import presets
        from cifar_core.sweeps import studies
        from cifar_core.sweeps.storage import SweepError

        add = len(self.queue_ops) % 2 == 0
        if not add:
            _, study = studies.load(studies.QUEUE)
            open_ = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("WAITING", "RUNNING")
                     and not t.user_attrs.get("removed")]
            if not open_:
                add = True
            else:
                t = rng.choice(open_)
                number = studies.display_number(t.number)
                try:
                    was = studies.remove(number)
                    op = {"op": "remove", "number": number, "was": was}
                except SweepError as exc:
                    op = {"op": "remove", "number": number, "refused": str(exc)}
        if add:
            self.queue_added += 1
            config = presets.preset_config("assignment", epochs=self.args.epochs, data="synthetic",
                                           train_subset=self.args.train_images, test_subset=self.args.test_images)
            number = studies.enqueue(config, name=f"soak-queue-{self.queue_added}", tags=("soak",))
            op = {"op": "add", "number": number}
        op["t"] = round(self.now(), 1)
        self.queue_ops.append(op)
        self.event("queue", **op)
        say(f"queue: {op}")

    def train_click(self) -> None:
        """A fresh tab fills Train with a tiny run and presses Start (or finds it disabled)."""
        from playwright.sync_api import expect

        n = len(self.train_clicks) + 1
        name = f"soak-train-{n}"
        record: dict[str, Any] = {"t": round(self.now(), 1), "name": name}
        context = self.browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(self.args.timeout * 1000)
        ms = self.args.timeout * 1000
        try:
            page = context.new_page()
            page.goto(self.url + "/train")
            expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible(timeout=ms)
            start = page.locator(LIVE).get_by_role("button", name="Start training")
            expect(start).to_be_visible(timeout=ms)
            for label, value in (("Run name", name), ("Epochs", self.args.epochs),
                                 ("Train images", self.args.train_images), ("Test images", self.args.test_images)):
                field = page.locator(LIVE).get_by_label(label, exact=True)
                field.fill(str(value))
                field.press("Tab")
            page.wait_for_timeout(500)
            if not start.is_enabled():
                info = page.locator(LIVE).get_by_text(re.compile(r"^Start is disabled"))
                record.update(outcome="disabled (busy)", why=info.first.inner_text(timeout=5000)
                              if info.count() else "")
            else:
                self.train_names.add(name)  # from now on a run of this name may exist
                start.click()
                deadline = time.monotonic() + self.args.timeout
                while time.monotonic() < deadline:
                    run = self.run_named(name)
                    if run:
                        record.update(outcome="started", run_id=run)
                        break
                    err = page.locator(LIVE).locator('[data-testid="stAlertContentError"]')
                    if err.count():
                        text = err.first.inner_text()
                        record.update(outcome="refused (busy)" if "busy" in text else "refused", why=text)
                        break
                    page.wait_for_timeout(500)
                else:
                    record.update(outcome="no answer", why=f"no run and no error within {self.args.timeout} s")
        except Exception as exc:  # the page never came: recorded, the soak goes on
            record.update(outcome="page problem", why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        finally:
            context.close()
        record["why"] = (record.get("why") or "")[:300]
        self.train_clicks.append(record)
        self.event("train click", **record)
        say(f"Train Start: {record['outcome']}{' ' + record.get('run_id', '') if record.get('run_id') else ''}"
            f"{': ' + record['why'][:160] if record.get('why') else ''}")

    def run_named(self, name: str) -> Optional[str]:
        for meta in (self.artifacts / "runs").glob("*/meta.json"):
            try:
                if json.loads(meta.read_text()).get("name") == name:
                    return meta.parent.name
            except (OSError, ValueError):
                continue
        return None

    # sampling
    def sample(self) -> None:
        from cifar_core import trainer_lock
        from cifar_core.sweeps import studies

        t = self.now()
        row: dict[str, Any] = {"t": round(t, 1), "minute": round(t / 60, 2), "server_start": self.server_starts}
        s = proc_sample(self.server.pid) if self.server and self.server.poll() is None else None
        if s:
            row.update(server_rss_mb=round(s["rss_mb"], 1), server_cpu_s=round(s["cpu_s"], 2),
                       server_open_files=s["open_files"], server_threads=s["threads"])
            if self.cpu_prev is not None and t > self.cpu_prev[0]:
                row["server_cores"] = round((s["cpu_s"] - self.cpu_prev[1]) / (t - self.cpu_prev[0]), 3)
            self.cpu_prev = (t, s["cpu_s"])
        row["journal_lines"] = line_count(self.journal)
        try:
            counts: dict[str, int] = {}
            for name in (SWEEP, studies.QUEUE):
                _, study = studies.load(name)
                for tr in study.get_trials(deepcopy=False):
                    key = f"{'q' if name == studies.QUEUE else 's'}_{tr.state.name.lower()}"
                    counts[key] = counts.get(key, 0) + 1
            row.update(counts)
        except Exception as exc:  # noqa: BLE001 - a sample must not end the soak
            row["storage_error"] = f"{type(exc).__name__}: {exc}"[:200]
        holder = trainer_lock.holder()
        row["lock"] = (holder or {}).get("what", "free")[:60] if holder is not None else "free"
        row["workers_alive"] = sum(p is not None and p.poll() is None for p in self.workers.values())
        self.samples.append(row)
        say("sample: " + ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("t", "minute")))

    # the end
    def dead_worker_trials(self) -> list[str]:
        """RUNNING trials whose worker (user attr "worker": its pid) is no longer alive."""
        from cifar_core.sweeps import studies

        found = []
        for name in (SWEEP, studies.QUEUE):
            _, study = studies.load(name)
            for t in study.get_trials(deepcopy=False):
                pid = (t.user_attrs.get("worker") or {}).get("pid")
                if t.state.name == "RUNNING" and pid and not alive(pid):
                    found.append(f"{name} #{studies.display_number(t.number)} (worker pid {pid})")
        return found

    def running_trials(self) -> list[str]:
        from cifar_core.sweeps import studies

        found = []
        for name in (SWEEP, studies.QUEUE):
            _, study = studies.load(name)
            found += [f"{name} #{studies.display_number(t.number)}" for t in study.get_trials(deepcopy=False)
                      if t.state.name == "RUNNING"]
        return found

    def pause(self, seconds: float) -> None:
        if self.watch is not None:
            try:
                self.watch.wait_for_timeout(seconds * 1000)  # lets Playwright deliver the tab's events
                return
            except Exception:
                pass
        time.sleep(seconds)


# --- checks ------------------------------------------------------------------------------------

def check_trials(soak: Soak, args) -> tuple[list[str], dict[str, Any]]:
    """Checks 1-4: trials' outcomes, lines of retries, runs per trial and their overlap, run folders."""
    from cifar_core import runs
    from cifar_core.sweeps import studies

    failures: list[str] = []
    figures: dict[str, Any] = {}
    run_list = runs.list_runs()
    status = {}
    for r in run_list:
        try:
            status[r.run_id] = json.loads((r.path / "status.json").read_text())
        except (OSError, ValueError):
            status[r.run_id] = {}
    by_trial: dict[tuple[str, int], list[Any]] = {}
    for r in run_list:
        rec = status[r.run_id].get("sweep")
        if isinstance(rec, dict) and isinstance(rec.get("trial"), int):
            by_trial.setdefault((rec.get("name"), rec["trial"]), []).append(r)

    for name in (SWEEP, studies.QUEUE):
        _, study = studies.load(name)
        trials = study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in (t.system_attrs.get("retry_history") or [])}
        numbers = {studies.display_number(t.number) for t in trials}
        states: dict[str, int] = {}
        lines: dict[int, list[Any]] = {}
        for t in trials:
            shown = studies.display_number(t.number)
            state = t.state.name
            attrs = t.user_attrs
            kind = state.lower()
            if state == "FAIL":
                if t.number in retried:
                    kind = "failed, retried"
                elif attrs.get("empty"):
                    kind = "failed, empty pop"
                elif attrs.get("error"):
                    kind = "failed with reason"
                else:
                    failures.append(f"{name} #{shown}: failed without a reason (no user attr 'error', not retried)")
                    kind = "failed WITHOUT reason"
            elif state == "RUNNING":
                failures.append(f"{name} #{shown}: still RUNNING at the end (worker {attrs.get('worker')})")
            elif state == "WAITING":
                if attrs.get("removed"):
                    kind = "waiting, removed"
                elif t.system_attrs.get("failed_trial") is not None:
                    kind = "waiting, a retry not yet run"
                elif name == studies.QUEUE:
                    failures.append(f"queue #{shown}: still WAITING at the end though the soak removed every waiting run")
                else:
                    kind = "waiting, never started"
            states[kind] = states.get(kind, 0) + 1
            if not attrs.get("empty"):
                root = t.system_attrs.get("failed_trial", t.number)
                lines.setdefault(root, []).append(t)
            folders = by_trial.get((name, shown), [])
            if len(folders) > 1:
                failures.append(f"{name} #{shown}: trained {len(folders)} times: {[r.run_id for r in folders]}")
            # a retry carries its predecessor's user attrs (run_id included) until it starts
            line_numbers = [studies.display_number(n) for n in (t.system_attrs.get("retry_history") or [])] + [shown]
            line_runs = {r.run_id for n in line_numbers for r in by_trial.get((name, n), [])}
            if attrs.get("run_id") and attrs["run_id"] not in line_runs:
                failures.append(f"{name} #{shown}: its run {attrs['run_id']} has no folder naming it or a trial it retries")
            if state == "COMPLETE" and folders and folders[0].status != "completed":
                failures.append(f"{name} #{shown}: complete, but its run {folders[0].run_id} is {folders[0].status}")
        ended_lines = 0
        for root, members in lines.items():
            finals = [t for t in members if t.state.name in ("COMPLETE", "PRUNED")
                      or (t.state.name == "FAIL" and t.number not in retried)]
            open_ = [t for t in members if t.state.name in ("WAITING", "RUNNING")]
            if len(finals) > 1:
                failures.append(f"{name} line #{studies.display_number(root)}: ended {len(finals)} times "
                                f"({[studies.display_number(t.number) for t in finals]})")
            if len(finals) == 1:
                ended_lines += 1
            if not finals and not open_:
                failures.append(f"{name} line #{studies.display_number(root)}: never ended")
            spans = []
            for t in members:
                for r in by_trial.get((name, studies.display_number(t.number)), []):
                    st = status.get(r.run_id, {})
                    begin = st.get("started_at")
                    end = st.get("finished_at") or r.last_write_at or max(
                        (p.stat().st_mtime for p in r.path.rglob("*") if p.is_file()), default=begin)
                    if begin is not None:
                        spans.append((float(begin), float(end or begin), r.run_id, studies.display_number(t.number)))
            spans.sort()
            for a, b in zip(spans, spans[1:]):
                if b[0] < a[1]:
                    failures.append(f"{name} line #{studies.display_number(root)}: runs {a[2]} (#{a[3]}) and {b[2]} "
                                    f"(#{b[3]}) overlap by {a[1] - b[0]:.1f} s: trained twice at once")
        retries = sum(1 for t in trials if t.system_attrs.get("failed_trial") is not None)
        figures[name] = {"trials": len(trials), "states": states, "lines": len(lines), "lines_ended": ended_lines,
                         "retries": retries, "numbers": len(numbers)}
        if name == SWEEP and ended_lines < args.trials:
            failures.append(f"only {ended_lines} sweep trials reached a final outcome; at least --trials "
                            f"{args.trials} were asked for")
    # check 4: every run folder belongs to a trial, a queued run, or a Start the soak pressed
    trial_runs = {(n, k) for n, k in by_trial}
    known_numbers = {}
    for name in (SWEEP, studies.QUEUE):
        _, study = studies.load(name)
        known_numbers[name] = {studies.display_number(t.number) for t in study.get_trials(deepcopy=False)}
    orphans = []
    for r in run_list:
        rec = status[r.run_id].get("sweep")
        if isinstance(rec, dict):
            if rec.get("name") in known_numbers and rec.get("trial") in known_numbers[rec["name"]]:
                continue
            orphans.append(f"{r.run_id} (names {rec.get('name')} #{rec.get('trial')}, which does not exist)")
        elif r.name in soak.train_names:
            continue
        else:
            orphans.append(f"{r.run_id} ({r.name or 'no name'}, {r.status}): no trial, queued run or Start of the soak")
    for o in orphans:
        failures.append(f"run folder {o}")
    figures["run_folders"] = {"total": len(run_list), "sweep": sum(1 for k in trial_runs if k[0] == SWEEP),
                              "queue": sum(1 for k in trial_runs if k[0] == studies.QUEUE),
                              "train_clicks": sum(1 for r in run_list if r.name in soak.train_names),
                              "orphans": len(orphans),
                              "statuses": {s: sum(1 for r in run_list if r.status == s)
                                           for s in sorted({r.status for r in run_list})}}
    return failures, figures


def check_journal(soak: Soak, args) -> tuple[list[str], dict[str, Any]]:
    from cifar_core.sweeps import studies

    trials, seconds = 0, []
    for name in (SWEEP, studies.QUEUE):
        _, study = studies.load(name)
        for t in study.get_trials(deepcopy=False):
            trials += 1
            if t.datetime_start and t.datetime_complete:
                seconds.append((t.datetime_complete - t.datetime_start).total_seconds())
    lines = line_count(soak.journal)
    per = lines / max(trials, 1)
    mean_s = sum(seconds) / len(seconds) if seconds else 0.0
    bound = JOURNAL_BASE_LINES + 1.5 * mean_s / args.heartbeat
    fig = {"lines": lines, "trials": trials, "lines_per_trial": round(per, 1), "mean_trial_seconds": round(mean_s, 1),
           "bound_lines_per_trial": round(bound, 1), "bytes": soak.journal.stat().st_size if soak.journal.exists() else 0}
    failures = [] if per <= bound else [f"journal: {per:.1f} lines per trial > bound {bound:.1f} "
                                        f"({JOURNAL_BASE_LINES} + 1.5 x {mean_s:.1f} s / {args.heartbeat:g} s heartbeat)"]
    return failures, fig


def check_server(soak: Soak, args) -> tuple[list[str], dict[str, Any]]:
    """The last half of the soak's samples of the last server process: flat RSS, files, threads, CPU."""
    end = max((s["t"] for s in soak.samples), default=0.0)
    half_from = end - (end - soak.chaos_started) / 2
    last = soak.server_starts
    rows = [s for s in soak.samples if s.get("server_start") == last and s["t"] >= half_from
            and s.get("server_rss_mb") is not None]
    failures: list[str] = []
    fig: dict[str, Any] = {"from_s": round(half_from, 1), "to_s": round(end, 1), "samples": len(rows)}
    if len(rows) < 3:
        return [f"server: only {len(rows)} samples in the last half (need 3): lengthen --minutes or shorten "
                f"--sample-seconds"], fig
    span_min = (rows[-1]["t"] - rows[0]["t"]) / 60
    for key, bound, unit in (("server_rss_mb", args.rss_bound_mb, "MB"), ("server_open_files", args.fd_bound, "files"),
                             ("server_threads", args.thread_bound, "threads"),
                             ("server_cores", args.cpu_bound_cores, "cores")):
        pts = [(s["t"] / 60, s[key]) for s in rows if s.get(key) is not None]
        if len(pts) < 2:
            continue
        k = slope(pts) or 0.0
        rise = k * span_min
        fig[key] = {"first": pts[0][1], "last": pts[-1][1], "min": min(p[1] for p in pts),
                    "max": max(p[1] for p in pts), "slope_per_min": round(k, 4), "rise_over_half": round(rise, 3),
                    "bound": bound}
        if rise > bound:
            failures.append(f"server {key}: rose {rise:.3g} {unit} over the last half ({pts[0][1]} -> {pts[-1][1]}, "
                            f"slope {k:.3g}/min) > bound {bound:g} {unit}")
    return failures, fig


# --- main --------------------------------------------------------------------------------------

def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="the chaos phase (setup and the end come on top)")
    p.add_argument("--trials", type=int, default=40, help="at least this many sweep trials must end")
    p.add_argument("--kill-every", type=float, default=180.0, help="seconds between SIGKILLs of a CLI worker (jittered +-30%%)")
    p.add_argument("--kill-server-at", type=float, default=None,
                   help="minute of the one SIGKILL to the server (default: a quarter of --minutes when that is >= 10; 0: never)")
    p.add_argument("--queue-every", type=float, default=120.0, help="seconds between queue adds/removes")
    p.add_argument("--train-every", type=float, default=300.0, help="seconds between Start presses on Train")
    p.add_argument("--sample-seconds", type=float, default=30.0)
    p.add_argument("--heartbeat", type=float, default=20.0, help="Optuna heartbeat seconds (product default 20)")
    p.add_argument("--grace", type=float, default=60.0, help="seconds without a beat before a trial is stale (default 60)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial / queued run / Train run")
    p.add_argument("--train-images", type=int, default=512)
    p.add_argument("--test-images", type=int, default=256)
    p.add_argument("--drain-seconds", type=float, default=None,
                   help="how long the end waits for dead workers' trials to be retried (default 3 x grace + 120)")
    p.add_argument("--rss-bound-mb", type=float, default=64.0)
    p.add_argument("--fd-bound", type=float, default=16.0)
    p.add_argument("--thread-bound", type=float, default=8.0)
    p.add_argument("--cpu-bound-cores", type=float, default=0.25)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for a page or the server to answer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifacts", help="the soak's artifacts folder (must be empty or absent; default: a temp folder)")
    p.add_argument("--keep-artifacts", action="store_true", help="keep the temp artifacts folder")
    p.add_argument("--out", help="folder for soak.json and soak.txt (default bench/results/soak-DATE)")
    args = p.parse_args(argv)
    if args.kill_server_at is None:
        args.kill_server_at = args.minutes / 4 if args.minutes >= 10 else 0.0
    if args.drain_seconds is None:
        args.drain_seconds = 3 * args.grace + 120
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse(argv)
    out = Path(args.out or C.RESULTS_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.stdout = Tee(out / "soak.txt")
    own_tmp = args.artifacts is None
    artifacts = Path(args.artifacts or tempfile.mkdtemp(prefix="soak-art-")).resolve()
    if artifacts.exists() and any(artifacts.iterdir()):
        print(f"--artifacts {artifacts} is not empty: the soak checks every run folder in it", file=sys.stderr)
        return 2
    artifacts.mkdir(parents=True, exist_ok=True)
    os.environ[C.ARTIFACTS_ENV] = str(artifacts)
    os.environ[C.DATA_ENV] = "synthetic"
    cpu = lscpu()
    data = C.describe_data("synthetic", args.train_images, args.test_images) + f", {args.epochs} epoch(s) per run"
    head = C.evidence("soak: server + CLI workers share a sweep and the queue, with kills", data, {
        "lscpu": f"{cpu['model_name']}, {cpu['cpus']} CPU(s)",
        "artifacts": str(artifacts), "out": str(out),
        "chaos": f"{args.minutes:g} min; SIGKILL a CLI worker every ~{args.kill_every:g} s; server SIGKILL at "
                 f"{'minute ' + format(args.kill_server_at, 'g') if args.kill_server_at else 'never'}; queue op every "
                 f"{args.queue_every:g} s; Train Start every {args.train_every:g} s; sample every {args.sample_seconds:g} s",
        "liveness": f"heartbeat {args.heartbeat:g} s, grace {args.grace:g} s (product: 20 s, 60 s)",
        "bounds": f"RSS +{args.rss_bound_mb:g} MB, open files +{args.fd_bound:g}, threads +{args.thread_bound:g}, "
                  f"CPU +{args.cpu_bound_cores:g} cores over the last half; journal <= {JOURNAL_BASE_LINES} + "
                  f"1.5 x trial seconds / heartbeat lines per trial"})
    rng = random.Random(args.seed)

    def terminated(signum, frame):  # `timeout` or Ctrl-C: the finally below still stops every process
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    soak = Soak(args, artifacts, out)
    soak.chaos_started = 0.0
    failures: list[str] = []
    figures: dict[str, Any] = {}
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        C.skip("soak", "Debian's chromium is not on PATH (apt-get install chromium)")
    try:
        create = subprocess.run([sys.executable, "-m", "cifar_core", "sweep", "create", SWEEP, "--space",
                                 "learning_rate=1e-4..1e-2:log", "--trials", str(SWEEP_LIMIT), "--sampler", "random",
                                 "--pruner", "none", "--data", "synthetic", "--epochs", str(args.epochs),
                                 "--train-subset", str(args.train_images), "--test-subset", str(args.test_images)],
                                cwd=C.REPO_ROOT, env=soak.env, capture_output=True, text=True, timeout=300)
        print(create.stdout.strip() or create.stderr.strip(), flush=True)
        if create.returncode != 0:
            raise RuntimeError(f"sweep create failed: {create.stderr[-2000:]}")
        with sync_playwright() as pw:
            soak.browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            soak.start_server()
            soak.open_watch_tab()
            soak.start_worker("sweep-A")
            soak.start_worker("sweep-B")
            soak.train_click()  # also loads the Train page's imports before the first sample
            soak.chaos_started = soak.now()
            deadline = soak.chaos_started + 60 * args.minutes
            next_sample = soak.now()
            next_kill = soak.now() + args.kill_every * rng.uniform(0.7, 1.3)
            next_queue = soak.now() + min(args.queue_every, 20)
            next_train = soak.now() + args.train_every
            server_kill_at = soak.chaos_started + 60 * args.kill_server_at if args.kill_server_at else None
            say(f"chaos for {args.minutes:g} min")
            while soak.now() < deadline:
                now = soak.now()
                if now >= next_sample:
                    soak.sample()
                    next_sample = now + args.sample_seconds
                if server_kill_at is not None and now >= server_kill_at:
                    server_kill_at = None
                    soak.kill_server()
                    continue
                if now >= next_kill and now < deadline - min(60.0, args.kill_every / 2):
                    soak.kill_worker(rng)
                    next_kill = soak.now() + args.kill_every * rng.uniform(0.7, 1.3)
                if now >= next_queue:
                    soak.queue_op(rng)
                    next_queue = soak.now() + args.queue_every * rng.uniform(0.7, 1.3)
                if now >= next_train:
                    soak.train_click()
                    next_train = soak.now() + args.train_every
                soak.reap_workers(restart=True)
                q = soak.workers["queue"]
                if q is None and soak.queue_waiting():
                    soak.start_worker("queue")
                soak.pause(1.0)
            # the end: the heartbeat gets every dead worker's trial retried, then everything stops
            say("chaos over: waiting for dead workers' trials to be failed and retried")
            t_drain = time.monotonic()
            while time.monotonic() - t_drain < args.drain_seconds:
                dead = soak.dead_worker_trials()
                if not dead:
                    break
                soak.reap_workers(restart=True)
                if soak.now() >= next_sample:
                    soak.sample()
                    next_sample = soak.now() + args.sample_seconds
                soak.pause(2.0)
            dead = soak.dead_worker_trials()
            figures["drain_seconds"] = round(time.monotonic() - t_drain, 1)
            if dead:
                failures.append(f"after {args.drain_seconds:g} s the heartbeat had not retried: {', '.join(dead)}")
            say(f"drained in {figures['drain_seconds']} s; {'still dead: ' + ', '.join(dead) if dead else 'none left'}")
            soak.sample()
            stop = soak.watch.locator(LIVE).get_by_role("button", name="Stop sweep")
            try:
                from playwright.sync_api import expect

                expect(stop).to_be_enabled(timeout=args.timeout * 1000)
                stop.click()
                expect(soak.watch.locator(LIVE).get_by_text(re.compile(r"; stopped$"))).to_be_visible(
                    timeout=args.timeout * 1000)
                say("Sweeps page: Stop sweep pressed")
            except Exception as exc:  # the page let us down: stop it as the CLI would, and say so
                failures.append(f"Stop sweep on the page failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                from cifar_core.sweeps import studies

                studies.stop(SWEEP)
            for slot, proc in soak.workers.items():
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for slot, proc in list(soak.workers.items()):
                if proc is None:
                    continue
                try:
                    rc = proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    failures.append(f"worker {slot} pid {proc.pid} did not end within 120 s of SIGTERM")
                    proc.kill()
                    rc = proc.wait()
                soak.event("worker stopped", slot=slot, pid=proc.pid, rc=rc)
                say(f"worker {slot} pid {proc.pid} ended {rc} after SIGTERM")
                soak.workers[slot] = None
            from cifar_core.sweeps import studies
            from cifar_core.sweeps.storage import SweepError

            for number in soak.queue_waiting():
                try:
                    studies.remove(number)
                    soak.queue_ops.append({"t": round(soak.now(), 1), "op": "remove (end)", "number": number})
                except SweepError as exc:
                    soak.queue_ops.append({"t": round(soak.now(), 1), "op": "remove (end)", "number": number,
                                           "refused": str(exc)})
            t_end = time.monotonic()
            from cifar_core import trainer_lock

            while time.monotonic() - t_end < 240:
                dead_now = {d.split(" (worker")[0] for d in soak.dead_worker_trials()}
                running = [r for r in soak.running_trials() if r not in dead_now]  # dead ones: reported above
                waiting_removed = [t for t in soak.queue_waiting()]
                if not running and trainer_lock.holder() is None and not waiting_removed:
                    break
                soak.pause(2.0)
            # removed waiting runs are failed by the next worker that looks: give the runner a moment
            t_rm = time.monotonic()
            while time.monotonic() - t_rm < 20:
                _, q = studies.load(studies.QUEUE)
                if not any(t.state.name == "WAITING" and t.user_attrs.get("removed")
                           for t in q.get_trials(deepcopy=False)):
                    break
                soak.pause(2.0)
            dead_now = {d.split(" (worker")[0] for d in soak.dead_worker_trials()}
            running = [r for r in soak.running_trials() if r not in dead_now]
            if running:
                failures.append(f"still RUNNING 240 s after the stop: {', '.join(running)}")
            soak.sample()
            try:
                soak.watch_context.close()
            except Exception:
                pass
            soak.browser.close()
        soak.server.send_signal(signal.SIGTERM)
        try:
            rc = soak.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            failures.append("the server did not end within 60 s of SIGTERM")
            soak.server.kill()
            rc = soak.server.wait()
        soak.server_log.close()
        say(f"server ended {rc} after SIGTERM")
        # checks
        for check in (check_trials, check_journal, check_server):
            f, fig = check(soak, args)
            failures += f
            figures[check.__name__.removeprefix("check_")] = fig
    except BaseException as exc:
        failures.append(f"the soak itself failed: {type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()
    finally:
        for proc in [*soak.workers.values(), soak.server]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    report(soak, args, head, figures, failures, out)
    if own_tmp and not args.keep_artifacts and not failures:
        shutil.rmtree(artifacts, ignore_errors=True)
    elif own_tmp:
        print(f"artifacts kept: {artifacts}")
    return 1 if failures else 0


def report(soak: Soak, args, head: dict[str, Any], figures: dict[str, Any], failures: list[str], out: Path) -> None:
    print()
    C.print_table(soak.samples, [
        ("minute", "minute", 1), ("server_start", "server"), ("server_rss_mb", "RSS MB", 0),
        ("server_cpu_s", "CPU s", 1), ("server_cores", "cores", 2), ("server_open_files", "open files"),
        ("server_threads", "threads"), ("journal_lines", "journal lines"), ("s_complete", "sweep done"),
        ("s_running", "sweep running"), ("s_waiting", "sweep waiting"), ("s_fail", "sweep failed"),
        ("q_complete", "queue done"), ("q_fail", "queue failed"), ("workers_alive", "CLI workers"), ("lock", "lock")],
        title="Samples")
    print(f"kills: {len(soak.kills)} ({sum(1 for k in soak.kills if k['slot'] != 'server')} CLI workers, "
          f"{sum(1 for k in soak.kills if k['slot'] == 'server')} server); while training: "
          f"{sum(1 for k in soak.kills if k.get('job_pids'))}")
    for k in soak.kills:
        print(f"  t {k['t']:>7} s  {k['slot']:<8} pid {k['pid']}: trial {k.get('trial')}, job {k.get('job_pids')}, "
              f"job ended after {k.get('job_stopped_s')} s, still alive {k.get('job_still_alive')}")
        if k.get("job_still_alive"):
            failures.append(f"the job of killed {k['slot']} pid {k['pid']} outlived it: {k['job_still_alive']}")
    print(f"queue ops: {len(soak.queue_ops)}: " + "; ".join(
        f"{o['op']} #{o['number']}" + (f" ({o['was']})" if o.get('was') else "") + (" REFUSED" if o.get("refused") else "")
        for o in soak.queue_ops))
    outcomes: dict[str, int] = {}
    for c in soak.train_clicks:
        outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1
    print(f"Train Start presses: {len(soak.train_clicks)}: {outcomes}")
    for c in soak.train_clicks:
        print(f"  t {c['t']:>7} s  {c['name']}: {c['outcome']} {c.get('run_id', '')} {c.get('why', '')[:150]}")
        if c["outcome"] in ("no answer", "page problem"):
            failures.append(f"Train Start {c['name']}: {c['outcome']}: {c.get('why', '')[:200]}")
    print(f"worker exits (not killed): {len(soak.worker_exits)}: " + "; ".join(
        f"{e['slot']} rc {e['rc']}" for e in soak.worker_exits))
    for e in soak.worker_exits:
        if e["slot"] != "queue" and e["rc"] not in (0,):
            failures.append(f"worker {e['slot']} pid {e['pid']} exited {e['rc']} on its own: {e['last_line']}")
    tr = figures.get("trials")
    for name in (SWEEP, "queue"):
        fig = figures.get("trials", {}).get(name) if tr else None
        if fig:
            print(f"{name}: {fig['trials']} trials, {fig['lines']} lines ({fig['lines_ended']} ended, "
                  f"{fig['retries']} retries): {fig['states']}")
    if tr:
        print(f"run folders: {tr['run_folders']}")
    j = figures.get("journal")
    if j:
        print(f"journal: {j['lines']} lines ({j['bytes'] / 1024:.0f} KiB) for {j['trials']} trials = "
              f"{j['lines_per_trial']} lines/trial (mean trial {j['mean_trial_seconds']} s); bound "
              f"{j['bound_lines_per_trial']} lines/trial")
    s = figures.get("server")
    if s:
        print(f"server, last half (soak s {s['from_s']}..{s['to_s']}, {s['samples']} samples):")
        for key in ("server_rss_mb", "server_open_files", "server_threads", "server_cores"):
            if key in s:
                v = s[key]
                print(f"  {key:<18} first {v['first']}  last {v['last']}  min {v['min']}  max {v['max']}  slope "
                      f"{v['slope_per_min']}/min  rise {v['rise_over_half']} (bound {v['bound']:g})")
    print()
    if failures:
        print(f"SOAK FAILED: {len(failures)} check(s)")
        for f in failures:
            print(f"  FAIL {f}")
    else:
        print("SOAK PASSED: every check held")
    payload = {**head, "args": vars(args), "figures": figures, "failures": failures, "samples": soak.samples,
               "kills": soak.kills, "queue_ops": soak.queue_ops, "train_clicks": soak.train_clicks,
               "worker_exits": soak.worker_exits, "events": soak.events}
    (out / "soak.json").write_text(json.dumps(payload, indent=2, default=str))
    print(f"results : {out / 'soak.json'}, {out / 'soak.txt'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
