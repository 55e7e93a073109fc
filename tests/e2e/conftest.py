"""Browser tests' fixtures: one real `streamlit run dashboard.py` per session on a free loopback
port (synthetic data, a private artifacts folder), Debian's Chromium through Playwright, and a
screenshot plus the server's log in test-results/e2e/ whenever a test fails."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "test-results" / "e2e"  # git-ignored
SERVER_START_SECONDS = 120  # importing Streamlit, pandas and plotly on a busy 2-core machine
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXPECT_MS = 15_000  # default wait of expect(...): one rerun of a page on a busy machine
VIEWPORT = {"width": 1400, "height": 1000}  # wide enough for the Train page's two columns
_SAVED_KEY = pytest.StashKey[list]()  # paths of failure artifacts, listed at the end


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell in teardown that a test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_configure(config):
    config.stash[_SAVED_KEY] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    saved = config.stash.get(_SAVED_KEY, [])
    if saved:
        terminalreporter.section("e2e failure artifacts")
        for line in saved:
            terminalreporter.write_line(line)


def _failed(item) -> bool:
    return any(getattr(getattr(item, f"rep_{when}", None), "failed", False) for when in ("setup", "call"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode().strip() == "ok"
    except (urllib.error.URLError, OSError):
        return False


class Server:
    """The dashboard under test: where it listens, where it stores runs, where it logs."""

    def __init__(self, url: str, artifacts_dir: Path, log_path: Path):
        self.url = url
        self.artifacts_dir = artifacts_dir
        self.log_path = log_path

    @property
    def port(self) -> str:
        return self.url.rsplit(":", 1)[-1]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def save_log(self, stem: str) -> Path:
        """A copy of the log so far in RESULTS_DIR, named after the test (and port: suites may
        run side by side)."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        copy = RESULTS_DIR / f"{stem}-{self.port}-server.log"
        shutil.copyfile(self.log_path, copy)
        return copy


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None and os.environ.get("CIFAR_REQUIRE_BROWSER"):
        pytest.fail("CIFAR_REQUIRE_BROWSER is set (CI) but chromium is not on PATH: apt-get install chromium")
    if path is None:
        pytest.skip("Debian's chromium is not on PATH (apt-get install chromium); "
                    "these tests never download a browser")
    return path


@contextlib.contextmanager
def _running_server(session_dir: Path, **extra_env: str) -> Iterator[Server]:
    """`streamlit run dashboard.py` on a free loopback port with synthetic data and `extra_env`."""
    artifacts_dir = session_dir / "artifacts"
    log_path = session_dir / "streamlit.log"  # copied to RESULTS_DIR when a test fails
    port = _free_port()
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts_dir), "CIFAR10_DATA": "synthetic", **extra_env}
    command = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false"]  # address: config.toml's
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    srv = Server(url, artifacts_dir, log_path)
    srv.process = process  # a test may kill the server outright
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(f"{url}/_stcore/health"):
            problem = (f"streamlit exited with code {process.returncode}" if process.poll() is not None
                       else f"streamlit did not answer within {SERVER_START_SECONDS} s"
                       if time.monotonic() > deadline else None)
            if problem:
                saved = srv.save_log("server-start")
                pytest.fail(f"{problem}: {' '.join(command)}\nlog {saved}:\n{srv.log_tail()}")
            time.sleep(0.25)  # polling a subprocess's port, not waiting on the page
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="session")
def server(tmp_path_factory, chromium_path) -> Server:
    """The app as a local user starts it; stopped at the end of the session."""
    with _running_server(tmp_path_factory.mktemp("e2e-server")) as srv:
        yield srv


LAB_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def locked_server(tmp_path_factory, chromium_path) -> Server:
    """The app shared with a password (CIFAR_LAB_PASSWORD) for actions."""
    with _running_server(tmp_path_factory.mktemp("e2e-locked"), CIFAR_LAB_PASSWORD=LAB_PASSWORD) as srv:
        srv.password = LAB_PASSWORD
        yield srv


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Tabs:
    """Opens browser tabs on the app, each in its own context (its own Streamlit session)."""

    def __init__(self, browser, server: Server):
        self._browser = browser
        self.server = server
        self.contexts = []
        self.pages = []

    def open(self, path: str | None = None):
        """A new tab in a new context; goes to `path` (e.g. "/train") when given."""
        context = self._browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        page = context.new_page()
        self.contexts.append(context)
        self.pages.append(page)
        if path is not None:
            page.goto(self.server.url + path)
        return page

    def save_failure_artifacts(self, nodeid: str) -> list[str]:
        """Screenshot every open tab and snapshot the server log; returns the paths written."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        written = []
        for i, page in enumerate(self.pages):
            path = RESULTS_DIR / f"{stem}-{self.server.port}-tab{i}.png"
            try:
                page.screenshot(path=str(path), full_page=True, timeout=15_000)
                written.append(str(path))
            except Exception as exc:  # a crashed tab must not hide the test's own failure
                written.append(f"(screenshot of tab {i} failed: {exc})")
        if self.server.log_path.exists():
            written.append(str(self.server.save_log(stem)))
        return written

    def close(self):
        for context in self.contexts:
            try:
                context.close()
            except Exception:
                pass


@pytest.fixture
def tabs(request, browser, server):
    """A factory of fresh tabs; on failure each is screenshotted and the server log copied."""
    t = Tabs(browser, server)
    yield t
    if _failed(request.node):
        paths = t.save_failure_artifacts(request.node.nodeid)
        lines = [f"{request.node.nodeid}: {p}" for p in paths]
        request.config.stash[_SAVED_KEY].extend(lines)  # listed again in the terminal summary
        for line in lines:
            print(line)
    t.close()


def _active_run_ids(server: Server) -> list[str]:
    """Runs of the server whose status says a job is training them (read from its run folders)."""
    from cifar_core import runs

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFAR_ARTIFACTS_DIR", str(server.artifacts_dir))
        return [r.run_id for r in runs.list_runs() if r.is_active]


@pytest.fixture(autouse=True)
def no_job_left_running(request, browser, server):
    """The server has one job for all tests: one left running would make the next Start fail.

    Torn down after `tabs` (so a failure's screenshots show the job as the test left it); stops a
    leftover job through the UI, and fails a test that passed but left one running."""
    yield
    active = _active_run_ids(server)
    if not active:
        return
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/train")
        stop = page.get_by_role("button", name="Stop", exact=True).first
        try:
            expect(stop).to_be_visible(timeout=30_000)
        except AssertionError:
            pass  # it finished on its own meanwhile
        else:
            if stop.is_enabled():  # disabled: already stopping
                stop.click()
        expect(page.get_by_role("button", name="Start training")).to_be_enabled(timeout=90_000)
    finally:
        context.close()
    if not _failed(request.node):
        pytest.fail(f"the test left job(s) {', '.join(active)} running; they were stopped")


@pytest.fixture
def page(tabs):
    """A fresh tab with its own Streamlit session, not yet navigated."""
    return tabs.open()
