"""Sweeps and the queue in the real app: a sweep created on the Sweeps page in headless Chromium
trains its trials on the server and they appear; a queued run survives its server being killed
(the restarted server trains it again). Waits on what a person sees, never on sleeps."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect

from conftest import ROOT, _running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAGE_MS = 60_000
SWEEP_MS = 180_000  # two 1-epoch trials of 300 images, TensorFlow import included


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_a_sweep_created_in_the_browser_shows_its_trials(page, server):
    page.goto(f"{server.url}/sweeps")
    expect(page.get_by_role("heading", name="Sweeps", exact=True)).to_be_visible(timeout=PAGE_MS)
    page.get_by_role("textbox", name="Sweep name").fill("browser-sweep")
    page.get_by_role("textbox", name="Search space: one FIELD=SPEC per line").fill("learning_rate=0.1..1.0:log")
    for label, value in (("Epochs per trial", 1), ("Trials", 2), ("Train images", 300), ("Test images", 100)):
        field = page.get_by_label(label, exact=True)
        field.fill(str(value))
        field.press("Tab")
    page.get_by_role("button", name="Create sweep").click()
    summary = page.get_by_text(re.compile(r"^browser-sweep: 2 of 2 trials \(2 complete\); best test accuracy tta"))
    expect(summary).to_be_visible(timeout=SWEEP_MS)
    expect(page.get_by_test_id("stException")).to_have_count(0)


def _queue_add(artifacts, *args: str) -> None:
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    subprocess.run([sys.executable, "-m", "cifar_core", "queue", "add", *args], cwd=ROOT, env=env, check=True,
                   capture_output=True)


def _queue_runs(artifacts) -> list[dict]:
    """Each queued run's run folder status, from the folders (name 'survivor')."""
    found = []
    for folder in sorted((artifacts / "runs").glob("*")) if (artifacts / "runs").is_dir() else []:
        meta = folder / "meta.json"
        if meta.is_file() and json.loads(meta.read_text()).get("name") == "survivor":
            status = json.loads((folder / "status.json").read_text())
            found.append({"id": folder.name, "history": (folder / "history.json").is_file(),
                          "status": status["status"], "error": status.get("error"),
                          "traceback": status.get("traceback")})
    return found


@pytest.mark.heavy  # two servers of its own
def test_a_queued_run_survives_its_server_being_killed(tmp_path, browser):
    artifacts = tmp_path / "artifacts"
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
    _queue_add(artifacts, "--epochs", "60", "--train-subset", "300", "--test-subset", "100", "--batch-size", "32",
               "--name", "survivor")
    # the trial's worker (the server) beats every second and is judged gone after 5 s of silence
    liveness = dict(CIFAR_SWEEP_HEARTBEAT_SECONDS="1", CIFAR_SWEEP_GRACE_SECONDS="5")
    with _running_server(tmp_path / "first", CIFAR_ARTIFACTS_DIR=str(artifacts), **liveness) as first:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{first.url}/sweeps")  # a served page starts the server's runner
        expect(page.get_by_role("heading", name="Sweeps", exact=True)).to_be_visible(timeout=PAGE_MS)
        deadline = time.monotonic() + 120
        while not any(r["history"] for r in _queue_runs(artifacts)):  # an epoch on disk: it really trains
            assert time.monotonic() < deadline, "the queued run did not start training"
            time.sleep(0.2)
        context.close()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
    with _running_server(tmp_path / "second", CIFAR_ARTIFACTS_DIR=str(artifacts), **liveness) as second:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{second.url}/sweeps")
        expect(page.get_by_role("heading", name="Sweeps", exact=True)).to_be_visible(timeout=PAGE_MS)
        deadline = time.monotonic() + 120
        while len(_queue_runs(artifacts)) < 2:  # the restarted server took the run up again
            assert time.monotonic() < deadline, "the restarted server did not train the queued run again"
            time.sleep(0.2)
        page.goto(f"{second.url}/train")
        page.get_by_role("button", name="Stop", exact=True).first.click(timeout=PAGE_MS)
        expect(page.get_by_role("button", name="Start training")).to_be_enabled(timeout=90_000)
        context.close()
    first_run = _queue_runs(artifacts)[0]
    # its job process, bound to the server, saved and stopped when the server died (not trained on
    # by nobody); the restarted server's heartbeat check retried the trial as a new run
    assert first_run["status"] == "stopped", (first_run["error"], first_run["traceback"])
