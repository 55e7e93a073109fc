"""The run report opens in headless Chromium with the network cut: every request it makes is for
the file itself or a data: URI, and it shows the run's accuracy and four named test images."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from conftest import ROOT

pytestmark = [pytest.mark.e2e]


def test_the_report_opens_offline_with_its_accuracy_and_four_named_images(browser, tmp_path):
    from cifar_core.config import TrainConfig
    from cifar_core.data import CLASS_NAMES

    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(tmp_path), "CIFAR10_DATA": "synthetic"}
    config = TrainConfig(data="synthetic", epochs=1, train_subset=600, test_subset=200, batch_size=32)
    trained = subprocess.run([sys.executable, "-m", "cifar_core", "train", "--epochs", "1", "--train-subset", "600",
                              "--test-subset", "200", "--batch-size", str(config.batch_size)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    run_id = re.search(r"\d{8}-\d{6}-[0-9a-f]{6}", trained.stdout).group(0)
    report = tmp_path / "report.html"
    made = subprocess.run([sys.executable, "-m", "cifar_core", "report", run_id, "--out", str(report)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert made.returncode == 0, made.stderr

    context = browser.new_context(offline=True)
    requests = []
    context.on("request", lambda r: requests.append(r.url))
    try:
        page = context.new_page()
        page.goto(report.as_uri())
        expect(page.get_by_role("heading", name="Result")).to_be_visible()
        expect(page.locator(".metrics")).to_contain_text(re.compile(r"test accuracy \d{1,3}\.\d\d%"))
        first = page.locator("h2:has-text('The first 4 test images') + .figures figure")
        expect(first).to_have_count(4)
        names = "|".join(CLASS_NAMES)
        for i in range(4):
            expect(first.nth(i)).to_contain_text(re.compile(rf"predicted ({names}).*true ({names})", re.S))
        assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("script").count() == 0
    finally:
        context.close()
    assert {u.split(":", 1)[0] for u in requests} <= {"file", "data"}, requests
