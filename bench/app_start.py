"""App start: seconds from launching `streamlit run dashboard.py` (fresh process, empty
artifacts folder, CIFAR10_DATA=synthetic) to the Home page's title visible in headless
Chromium, and to the Train page's title after navigating to /train. Also whether the server
had loaded TensorFlow by then (its /proc/<pid>/maps). Target: home <= 3 s.

Chromium is the system one (Playwright never downloads a browser here) and is started before
the clock starts; each repeat launches a new server on a free port.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HOME_TARGET_S = 3.0
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TF_LIBRARY_MARKERS = ("libtensorflow", "_pywrap_tensorflow")
# Streamlit marks its root element with the script's run state; "running" while a page script runs.
BUSY_STATES = ("initial", "running", "rerunRequested")


def tensorflow_loaded(pid: int) -> Optional[bool]:
    """Whether TensorFlow's shared libraries are mapped into the process (None: cannot tell)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return any(m in maps for m in TF_LIBRARY_MARKERS)


def wait_health(port: int, proc: subprocess.Popen, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"streamlit did not answer {url} within {timeout:.0f} s")


def wait_heading(page, text: str, timeout_s: float) -> float:
    page.locator("h1", has_text=text).first.wait_for(state="visible", timeout=timeout_s * 1000)
    return time.perf_counter()


def wait_idle(page, timeout_s: float) -> float:
    page.wait_for_function(
        "busy => { const a = document.querySelector('[data-testid=\"stApp\"]');"
        " return a && !busy.includes(a.getAttribute('data-test-script-state')); }",
        arg=list(BUSY_STATES), timeout=timeout_s * 1000)
    return time.perf_counter()


# Streamlit's own floor on this machine: the same page config and title, nothing else.
BARE_APP = """import streamlit as st
st.set_page_config(page_title="CIFAR-10 Lab", layout="wide")
st.title({title!r})
"""


def one_start(browser, args, repeat: int, app: str = "dashboard") -> dict[str, Any]:
    """Launch one server and time it; app 'bare' is a one-title Streamlit script (home only)."""
    port = C.free_port()
    art = Path(tempfile.mkdtemp(prefix="bench-app-"))
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(art), "CIFAR10_DATA": "synthetic", "PYTHONUNBUFFERED": "1"}
    script, cwd = "dashboard.py", C.REPO_ROOT
    if app == "bare":
        (art / "bare_app.py").write_text(BARE_APP.format(title=args.home_text))
        if (C.REPO_ROOT / ".streamlit" / "config.toml").is_file():  # same server settings as the dashboard
            (art / ".streamlit").mkdir()
            shutil.copy(C.REPO_ROOT / ".streamlit" / "config.toml", art / ".streamlit" / "config.toml")
        script, cwd = "bare_app.py", art
    cmd = [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    log = open(art / "streamlit.log", "w")
    context = browser.new_context()
    page = context.new_page()
    base = f"http://127.0.0.1:{port}"
    row: dict[str, Any] = {"app": app, "repeat": repeat, "port": port}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        row["server_ready_s"] = wait_health(port, proc, args.timeout) - t0
        page.goto(base + "/", wait_until="commit")
        row["home_s"] = wait_heading(page, args.home_text, args.timeout) - t0
        row["home_idle_s"] = wait_idle(page, args.timeout) - t0
        row["tf_after_home"] = tensorflow_loaded(proc.pid)
        row["rss_after_home_mb"] = C.rss_mb(proc.pid)
        if app == "bare":
            return row
        t = time.perf_counter()
        page.goto(base + "/train", wait_until="commit")
        row["train_nav_s"] = wait_heading(page, args.train_text, args.timeout) - t
        row["train_idle_nav_s"] = wait_idle(page, args.timeout) - t
        row["train_from_launch_s"] = time.perf_counter() - t0
        row["tf_after_train"] = tensorflow_loaded(proc.pid)
        t = time.perf_counter()
        page.goto(base + "/", wait_until="commit")
        row["home_warm_s"] = wait_heading(page, args.home_text, args.timeout) - t
        row["rss_end_mb"] = C.rss_mb(proc.pid)
        row["page_errors"] = page.locator('[data-testid="stException"]').count()
    finally:
        context.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if args.keep_logs:
            row["log"] = str(art / "streamlit.log")
        else:
            shutil.rmtree(art, ignore_errors=True)
    return row


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--home-text", default="CIFAR-10 Lab", help="the Home page's title to wait for")
    parser.add_argument("--train-text", default="Train", help="the Train page's title to wait for")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step")
    parser.add_argument("--wait-for-dashboard", type=float, default=0.0,
                        help="seconds to wait for dashboard.py to appear (default: skip at once)")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare one-title Streamlit app measured alternately as the floor")
    parser.add_argument("--keep-logs", action="store_true", help="keep each server's log and artifacts folder")
    parser.add_argument("--out", help="results file stem under bench/results/")
    args = parser.parse_args(argv)
    dashboard = C.REPO_ROOT / "dashboard.py"
    deadline = time.time() + args.wait_for_dashboard
    while not dashboard.is_file() and time.time() < deadline:
        time.sleep(5)
    if not dashboard.is_file():
        C.skip("app_start", f"{dashboard} does not exist yet")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        C.skip("app_start", "no system Chromium on PATH (this benchmark never downloads a browser)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        C.skip("app_start", "the playwright Python package is not installed")
    head = C.evidence("app_start", "CIFAR10_DATA=synthetic, fresh empty CIFAR_ARTIFACTS_DIR per start", {
        "setup": f"{args.repeats} start(s) of dashboard.py{'' if args.no_bare else ' alternating with a bare one-title app'}; streamlit run dashboard.py --server.headless true --server.port <free>; "
                 f"Chromium {chromium} headless {' '.join(CHROMIUM_ARGS)}",
    })
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            for i in range(1, args.repeats + 1):
                for app in ("dashboard",) if args.no_bare else ("dashboard", "bare"):
                    row = one_start(browser, args, i, app)
                    rows.append(row)
                    print(f"start {i} {app}: server {row['server_ready_s']:.2f} s, home {row['home_s']:.2f} s "
                          f"(idle {row['home_idle_s']:.2f} s), train +{C.fmt(row.get('train_nav_s'))} s, "
                          f"TF loaded after home: {C.fmt(row['tf_after_home'])}", flush=True)
        finally:
            browser.close()
    print()
    C.print_table(rows, [
        ("app", "app"), ("repeat", "start"), ("server_ready_s", "server ready s"), ("home_s", "home title s"),
        ("home_idle_s", "home done s"), ("train_nav_s", "/train title s (from nav)"),
        ("train_idle_nav_s", "/train done s (from nav)"), ("train_from_launch_s", "train from launch s"),
        ("home_warm_s", "home again s"), ("tf_after_home", "TF loaded after home"),
        ("tf_after_train", "TF loaded after train"), ("rss_after_home_mb", "server RSS MB (home)"),
        ("rss_end_mb", "server RSS MB (end)"), ("page_errors", "exceptions shown"),
    ], title="Runs")
    keys = ("server_ready_s", "home_s", "home_idle_s", "train_nav_s", "train_idle_nav_s", "train_from_launch_s",
            "home_warm_s", "rss_after_home_mb")
    dash = [r for r in rows if r["app"] == "dashboard"]
    bare = [r for r in rows if r["app"] == "bare"]
    summary = {k: C.median(r.get(k) for r in dash) for k in keys}
    summary["tf_after_home"] = any(r["tf_after_home"] for r in dash)
    summary["meets_target"] = summary["home_s"] <= HOME_TARGET_S
    if bare:
        summary["bare_server_ready_s"] = C.median(r["server_ready_s"] for r in bare)
        summary["bare_home_s"] = C.median(r["home_s"] for r in bare)
        summary["dashboard_minus_bare_home_s"] = C.median(d["home_s"] - b["home_s"] for d, b in zip(dash, bare))
    C.print_table([{"what": k, "median": v} for k, v in summary.items()], [("what", "median of starts"),
                                                                            ("median", "value")], title="Summary")
    print(f"home title {summary['home_s']:.2f} s vs target {HOME_TARGET_S:g} s: "
          f"{'met' if summary['meets_target'] else 'MISSED'}; TensorFlow loaded by the server for the home page: "
          f"{'yes' if summary['tf_after_home'] else 'no'}")
    C.save_results("app_start", {**head, "args": vars(args), "runs": rows, "summary": summary}, rows=rows,
                   stem=args.out)


if __name__ == "__main__":
    main()
