"""One local tab: what watching a run costs training when the browser shares the machine
(BENCHMARKS.md section 8, "One local tab"; load_tabs.py pins the browsers to the other core and
so measures the server's cost alone).

A run trained by the CLI (`python -m cifar_core train --preset fast --epochs 4`: the Fast recipe at
its unplanned size, ~75-90 s of training on the 2-core Xeon; a fresh process per side) alone, and with one headless Chromium tab following it live on the Train page of a dashboard on
the same machine; nothing is pinned to a core, as on a person's own machine. Every side starts a
fresh `streamlit run dashboard.py` (a scratch CIFAR_ARTIFACTS_DIR whose decoded data cache is
kept), so both sides run the same processes; on the tab side the tab is open on /train before the
run starts, as for someone who starts a run in a terminal and watches it in the lab. Sides
alternate (alone, tab, then reversed in the next round). `--before DIR` adds a side whose tab
watches through a dashboard served from DIR (a copy of the code before a change): before and
after in one run.

Speed: the run's training seconds (history.json `train_seconds`: fit time without validation, as
the CLI reports it); ratio = alone / with the tab, per round (below 1: the tab slowed training).
Target: one tab costs <= 3% (median of the rounds' ratios). CPU over the training window (first to
last TensorBoard batch event, in cores): the tab by Chromium process (renderer, GPU, browser,
network service, other), the server by thread (the live feed, the event loop serving the files,
page scripts, the rest), the trainer and everyone else on the machine; Playwright's driver is the
bench's, shown apart. In the tab: Chrome DevTools Protocol Performance metrics over the window
(ms per second of tasks, script, layout and style), Plotly redraws per chart and the page's
websocket messages (rerun requests), counted by a small script added to the page.

    python bench/watch_cost.py --data /tmp/cifar/cifar10-jpeg --rounds 2
    python bench/watch_cost.py --data /tmp/cifar/cifar10-jpeg --rounds 2 --before /tmp/before
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from app_start import CHROMIUM_ARGS, wait_health  # noqa: E402
from load_tabs import (THREAD_NAMES_ENV, batch_events, machine_busy, process_cpu, read_json,  # noqa: E402
                       thread_cpu, warm_cache)

TARGET_SLOWDOWN = 0.03
DEFAULT_ARTIFACTS = Path(tempfile.gettempdir()) / "watch-cost-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}  # the Train page's two columns, as the browser tests use
CLK = os.sysconf("SC_CLK_TCK")
CDP_METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")
# Counts the live panel's Plotly redraws per chart (data-chart: batch, loss, accuracy; "other":
# Streamlit's own charts) and the websocket messages the page sends (its rerun requests).
PAGE_COUNTER = """(() => {
  const counts = {draws: {}, sent: 0};
  Object.defineProperty(window, '__benchCounts', {value: counts});
  let plotly;
  Object.defineProperty(window, 'Plotly', {configurable: true, get() { return plotly; }, set(v) {
    plotly = v;
    if (v && typeof v.react === 'function' && !v.__benchCounted) {
      const react = v.react;
      v.react = function (div) {
        const name = (div && div.dataset && div.dataset.chart) || 'other';
        counts.draws[name] = (counts.draws[name] || 0) + 1;
        return react.apply(this, arguments);
      };
      v.__benchCounted = true;
    }
  }});
  const Base = window.WebSocket;
  window.WebSocket = class extends Base { send(d) { counts.sent++; return super.send(d); } };
})();"""


def chromium_kind(pid: int) -> str:
    """'renderer', 'gpu-process', 'browser', 'network' ... from a Chromium process's command line
    (a zygote's children rewrite theirs into one space-separated string)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
    except OSError:
        return "gone"
    if not args:
        return "gone"
    if "chrom" not in Path(args[0]).name:
        return "driver" if Path(args[0]).name == "node" else "other"
    kind = next((a.split("=", 1)[1] for a in args if a.startswith("--type=")), "browser")
    if kind == "utility":
        sub = next((a.split("=", 1)[1] for a in args if a.startswith("--utility-sub-type=")), "")
        return "network" if "Network" in sub else "utility"
    return kind


def own_processes(exclude: set[int]) -> dict[int, float]:
    """pid -> CPU s of every process below this one, except the subtrees of `exclude`."""
    table: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                text = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rfind(")") + 2:].split()
            table[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        if pid not in exclude:
            out[pid] = table[pid][1]
            todo += children.get(pid, [])
    return out


def server_thread_kind(name: Optional[str]) -> str:
    if name is None:
        return "native"
    if name.startswith("cifar-live-feed"):
        return "feed"  # cifar_ui/browser_feed.py: the progress and charts files
    if name.startswith("ScriptRunner"):
        return "scripts"  # page and fragment reruns
    if name == "MainThread" or name.startswith(("ThreadPoolExecutor", "AnyIO")):
        return "serving"  # the event loop and the workers it hands file reads to
    return "other"


class Side:
    """One side: a fresh server, maybe a tab on /train, then one CLI run to its end."""

    def __init__(self, browser, args, artifacts: Path, source: str, app: Path, tab: bool, label: str):
        self.args, self.artifacts, self.source, self.label = args, artifacts, source, label
        shutil.rmtree(artifacts / "runs", ignore_errors=True)  # cache/ (the decoded images) stays
        (artifacts / "runs").mkdir(parents=True)
        self.port = C.free_port()
        self.names_file = artifacts / f"threads-{label}.json"
        self.names_file.unlink(missing_ok=True)
        env = {**os.environ, C.ARTIFACTS_ENV: str(artifacts), C.DATA_ENV: source, "PYTHONUNBUFFERED": "1",
               THREAD_NAMES_ENV: str(self.names_file)}
        self.log = open(artifacts / f"streamlit-{label}.log", "w")
        self.server = subprocess.Popen(
            [sys.executable, str(C.BENCH_DIR / "_thread_names.py"), "run", "dashboard.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=app, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.trainer: Optional[subprocess.Popen] = None
        self.context = self.page = self.cdp = None
        self.samples: list[dict[str, Any]] = []
        self.cdp_samples: list[tuple[float, dict[str, float]]] = []
        self.kinds: dict[int, str] = {}
        self.names: dict[int, str] = {}
        self.server_threads: dict[int, float] = {}
        wait_health(self.port, self.server, args.timeout)
        if tab:
            from playwright.sync_api import expect
            self.context = browser.new_context(viewport=VIEWPORT)
            self.context.set_default_timeout(args.timeout * 1000)
            self.context.add_init_script(PAGE_COUNTER)
            self.page = self.context.new_page()
            self.page.goto(f"http://127.0.0.1:{self.port}/train")
            expect(self.page.get_by_text("No training job to show")).to_be_visible(timeout=args.timeout * 1000)
            self.cdp = self.context.new_cdp_session(self.page)
            self.cdp.send("Performance.enable")

    def pause(self, seconds: float) -> None:
        if self.page is not None:
            self.page.wait_for_timeout(seconds * 1000)  # Playwright delivers its events meanwhile
        else:
            time.sleep(seconds)

    def sample(self) -> None:
        exclude = {self.server.pid} | ({self.trainer.pid} if self.trainer else set())
        procs = own_processes(exclude)
        by_kind: dict[str, float] = {}
        for pid, cpu in procs.items():
            kind = self.kinds.get(pid) or self.kinds.setdefault(pid, chromium_kind(pid))
            by_kind[kind] = by_kind.get(kind, 0.0) + cpu
        try:
            self.names.update({int(k): v for k, v in json.loads(self.names_file.read_text()).items()})
        except (OSError, ValueError):
            pass
        self.server_threads.update(thread_cpu(self.server.pid))  # a thread that ended keeps its last reading
        server_total = process_cpu(self.server.pid) or 0.0
        server = {}
        for tid, cpu in self.server_threads.items():
            kind = server_thread_kind(self.names.get(tid))
            server[kind] = server.get(kind, 0.0) + cpu
        server["exited"] = max(0.0, server_total - sum(server.values()))
        self.samples.append({"wall": time.time(), "t": time.perf_counter(), "machine": machine_busy(),
                             "bench": process_cpu(os.getpid()) or 0.0, "server": server_total,
                             "trainer": (process_cpu(self.trainer.pid) or 0.0) if self.trainer else 0.0,
                             **{f"tab_{k}": v for k, v in by_kind.items()},
                             **{f"server_{k}": v for k, v in server.items()}})

    def cdp_sample(self) -> None:
        if self.cdp is None:
            return
        try:
            got = {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}
        except Exception:  # noqa: BLE001 - the page navigated (a rerun does not; a crash would)
            return
        self.cdp_samples.append((time.time(), got))

    def train(self) -> dict[str, Any]:
        """The CLI run to its end, sampling CPU every second; its results and CPU in its window."""
        args = self.args
        cmd = [sys.executable, "-m", "cifar_core", "train", "--preset", args.preset, "--data", self.source,
               "--name", f"watch-cost-{self.label}"]
        for flag, value in (("--epochs", args.epochs or None), ("--train-subset", args.train_subset),
                            ("--test-subset", args.test_subset)):
            if value is not None:
                cmd += [flag, str(value)]
        env = {**os.environ, C.ARTIFACTS_ENV: str(self.artifacts), "PYTHONUNBUFFERED": "1"}
        with open(self.artifacts / f"trainer-{self.label}.log", "w") as log:
            t0 = time.perf_counter()
            self.sample()
            self.cdp_sample()
            self.trainer = subprocess.Popen(cmd, cwd=C.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            k = 0
            while self.trainer.poll() is None:
                if time.perf_counter() - t0 > args.run_timeout:
                    self.trainer.kill()
                    raise RuntimeError(f"{self.label}: the CLI run did not end within {args.run_timeout:g} s")
                self.pause(1.0)
                self.sample()
                k += 1
                if k % 5 == 0:
                    self.cdp_sample()
            self.sample()
            self.cdp_sample()
            wall = time.perf_counter() - t0
        if self.trainer.returncode != 0:
            raise RuntimeError(f"{self.label}: the CLI run failed ({self.trainer.returncode}); see "
                               f"{self.artifacts / f'trainer-{self.label}.log'}")
        run_dir = next(p for p in (self.artifacts / "runs").iterdir() if p.is_dir() and (p / "history.json").is_file())
        history = read_json(run_dir / "history.json") or {}
        config = read_json(run_dir / "config.json") or {}
        seconds = history.get("train_seconds") or [None]
        row: dict[str, Any] = {"run_id": run_dir.name, "train_s": seconds[-1], "cli_wall_s": wall,
                               "epochs": len(history.get("loss", [])), "status": (read_json(run_dir / "status.json") or {}).get("status"),
                               "test_accuracy": ((read_json(run_dir / "metrics.json") or {}).get("test_accuracy")),
                               "train_images": config.get("train_subset")}
        events = batch_events(run_dir)
        if len(events) >= 2:
            row.update(self.window(events[0][1], events[-1][1]))
        if self.page is not None:
            row["page_counts"] = self.page.evaluate("() => JSON.parse(JSON.stringify(window.__benchCounts || {}))")
        return row

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Cores on average between wall times t0 and t1 (the samples nearest to them)."""
        a = min(self.samples, key=lambda s: abs(s["wall"] - t0))
        b = min(self.samples, key=lambda s: abs(s["wall"] - t1))
        dt = b["t"] - a["t"]
        if dt <= 0:
            return {}
        d = {k: (b.get(k, 0.0) - a.get(k, 0.0)) / dt for k in set(a) | set(b) if k not in ("wall", "t")}
        tab = {k[4:]: v for k, v in d.items() if k.startswith("tab_") and k != "tab_driver"}
        out: dict[str, Any] = {"window_s": dt, "trainer_cores": d["trainer"], "server_cores": d["server"],
                               "tab_cores": sum(tab.values()), "driver_cores": d.get("tab_driver", 0.0),
                               "tab_by_process": {k: round(v, 4) for k, v in sorted(tab.items(), key=lambda x: -x[1])},
                               "server_by_thread": {k[7:]: round(v, 4) for k, v in d.items() if k.startswith("server_")},
                               "others_cores": d["machine"] - d["server"] - d["trainer"] - sum(tab.values())
                               - d.get("tab_driver", 0.0) - d["bench"],
                               "idle_cores": (os.cpu_count() or 2) - d["machine"]}
        for kind in ("renderer", "gpu-process", "browser", "network"):
            out[f"tab_{kind}_cores"] = tab.get(kind, 0.0)
        for kind in ("feed", "serving", "scripts"):
            out[f"server_{kind}_cores"] = d.get(f"server_{kind}", 0.0)
        if len(self.cdp_samples) >= 2:
            (wa, ma) = min(self.cdp_samples, key=lambda s: abs(s[0] - t0))
            (wb, mb) = min(self.cdp_samples, key=lambda s: abs(s[0] - t1))
            if wb > wa:
                for name in CDP_METRICS:
                    out[f"cdp_{name}"] = 1000 * (mb.get(name, 0.0) - ma.get(name, 0.0)) / (wb - wa)  # ms per s
        return out

    def close(self) -> None:
        if self.trainer is not None and self.trainer.poll() is None:
            self.trainer.kill()
            self.trainer.wait()
        if self.context is not None:
            try:
                self.context.close()
            except Exception:  # noqa: BLE001
                pass
        self.server.terminate()
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.log.close()
        if not self.args.keep_logs:
            for path in self.artifacts.glob(f"*-{self.label}.*"):
                path.unlink(missing_ok=True)


def summarize(rows: list[dict[str, Any]], sides: list[str]) -> dict[str, Any]:
    """Per watched side: the rounds' alone/with-tab ratios of training seconds, their median."""
    out: dict[str, Any] = {}
    by_round: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["side"]] = r
    for side in sides[1:]:
        ratios = [s["alone"]["train_s"] / s[side]["train_s"] for s in by_round.values()
                  if "alone" in s and side in s and s["alone"].get("train_s") and s[side].get("train_s")]
        mine = [r for r in rows if r["side"] == side]
        ratio = statistics.median(ratios) if ratios else None
        out[side] = {"ratios": ratios, "ratio": ratio, "slowdown": None if ratio is None else 1 - ratio,
                     "train_s": C.median(r.get("train_s") for r in mine),
                     "tab_cores": C.median(r.get("tab_cores") for r in mine),
                     "server_cores": C.median(r.get("server_cores") for r in mine),
                     "meets_target": None if ratio is None else 1 - ratio <= TARGET_SLOWDOWN}
    alone = [r for r in rows if r["side"] == "alone"]
    out["alone"] = {"train_s": C.median(r.get("train_s") for r in alone),
                    "server_cores": C.median(r.get("server_cores") for r in alone)}
    return out


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="the images (e.g. /tmp/cifar/cifar10-jpeg); default $CIFAR10_DATA, then the "
                                       "shared archive")
    parser.add_argument("--preset", default="fast", help="the CLI's --preset (default fast)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="the run's epochs (default 4: Fast's own recipe, widths 16/64/64 in float32; 0: none "
                             "given, so the CLI plans Fast for its 5-minute budget, probing the machine first)")
    parser.add_argument("--train-subset", type=int, help="train on this many images only (default all)")
    parser.add_argument("--test-subset", type=int, help="validate on this many test images only (default all)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (alone, tab[, tab on --before])")
    parser.add_argument("--before", help="also watch through a dashboard served from this folder (a copy of the "
                                         "code before a change, with its .streamlit/config.toml)")
    parser.add_argument("--artifacts", default=str(DEFAULT_ARTIFACTS),
                        help="scratch CIFAR_ARTIFACTS_DIR; its cache/ is kept, its runs/ emptied before each side")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for the server and the page to come up")
    parser.add_argument("--run-timeout", type=float, default=1200.0, help="seconds for one CLI run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server and trainer logs in the artifacts folder")
    parser.add_argument("--out", help="results file stem under bench/results/")
    args = parser.parse_args(argv)

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        C.skip("watch_cost", "no system Chromium on PATH (this benchmark never downloads a browser)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        C.skip("watch_cost", "the playwright Python package is not installed")
    source = C.resolve_data(args.data, "watch_cost", allow_synthetic=False)
    artifacts = Path(args.artifacts).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    apps = {"alone": C.REPO_ROOT, "tab": C.REPO_ROOT}
    if args.before:
        apps["tab (--before)"] = Path(args.before).resolve()
    sides = list(apps)
    head = C.evidence("watch_cost", C.describe_data(source, args.train_subset, args.test_subset), {
        "setup": f"`python -m cifar_core train --preset {args.preset}`"
                 f"{f' --epochs {args.epochs}' if args.epochs else ''} per side, a fresh dashboard each; sides "
                 f"{sides} alternating (reversed every other round), {args.rounds} round(s); the tab: headless "
                 f"Chromium {chromium}, {VIEWPORT['width']}x{VIEWPORT['height']}, on /train before the run starts; "
                 f"nothing pinned; artifacts {artifacts}" + (f"; --before {apps['tab (--before)']}" if args.before else ""),
    })
    warm = warm_cache(source, artifacts)
    if warm is not None:
        print(f"data cache ready in {warm:.1f} s ({artifacts / 'cache'})\n", flush=True)
    rows: list[dict[str, Any]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            for r in range(1, args.rounds + 1):
                for side in (sides if r % 2 else sides[::-1]):
                    label = f"r{r}-{re.sub(r'[^a-z]+', '', side)}"
                    load = os.getloadavg()[0]
                    lab = Side(browser, args, artifacts, source, apps[side], tab=side != "alone", label=label)
                    try:
                        row = {"round": r, "side": side, "load_at_start": load, **lab.train()}
                    except BaseException:
                        print(f"{label}: failed; server log tail:\n"
                              f"{(artifacts / f'streamlit-{label}.log').read_text(errors='replace')[-2000:]}", flush=True)
                        raise
                    finally:
                        lab.close()
                    rows.append(row)
                    print(f"round {r}, {side}: training {C.fmt(row.get('train_s'), 1)} s ({row.get('epochs')} epochs, "
                          f"{row.get('status')}); tab {C.fmt(row.get('tab_cores'), 3)} cores {row.get('tab_by_process', '')}; "
                          f"server {C.fmt(row.get('server_cores'), 3)} {row.get('server_by_thread', '')}; trainer "
                          f"{C.fmt(row.get('trainer_cores'))}; others {C.fmt(row.get('others_cores'))}; load at start "
                          f"{load:.1f}; page {row.get('page_counts', '-')}", flush=True)
        finally:
            browser.close()
    print()
    C.print_table(rows, [
        ("round", "round"), ("side", "side"), ("train_s", "training s", 1), ("trainer_cores", "trainer"),
        ("tab_cores", "tab", 3), ("tab_renderer_cores", "renderer", 3), ("tab_gpu-process_cores", "GPU process", 3),
        ("tab_browser_cores", "browser", 3), ("tab_network_cores", "network", 3),
        ("server_cores", "server", 3), ("server_feed_cores", "feed", 3), ("server_serving_cores", "serving", 3),
        ("server_scripts_cores", "page scripts", 3), ("others_cores", "others"), ("idle_cores", "idle"),
        ("cdp_TaskDuration", "tab tasks ms/s", 1), ("cdp_ScriptDuration", "script ms/s", 1),
        ("cdp_LayoutDuration", "layout ms/s", 1), ("cdp_RecalcStyleDuration", "style ms/s", 1),
        ("load_at_start", "load avg", 1),
    ], title="Per side (CPU in cores over the training window; the tab without Playwright's driver)")
    summary = summarize(rows, sides)
    C.print_table([{"side": s, **v, "ratios": " ".join(f"{x:.3f}" for x in v.get("ratios", [])),
                    "slowdown": None if v.get("slowdown") is None else f"{100 * v['slowdown']:.1f}%"}
                   for s, v in summary.items() if s != "alone"], [
        ("side", "side"), ("train_s", "training s (median)", 1), ("ratios", "alone / with tab, per round"),
        ("ratio", "median ratio", 3), ("slowdown", "slowdown"), ("tab_cores", "tab cores", 3),
        ("server_cores", "server cores", 3),
    ], title=f"Summary (alone: training {C.fmt(summary['alone']['train_s'], 1)} s median, server "
             f"{C.fmt(summary['alone']['server_cores'], 3)} cores)")
    for side, s in summary.items():
        if side != "alone" and s["slowdown"] is not None:
            print(f"{side}: one local tab slows training by {100 * s['slowdown']:.1f}% "
                  f"(target <= {100 * TARGET_SLOWDOWN:.0f}%): {'met' if s['meets_target'] else 'MISSED'}")
    C.save_results("watch_cost", {**head, "args": vars(args), "source": source, "runs": rows, "summary": summary},
                   rows=rows, stem=args.out)


if __name__ == "__main__":
    main()
