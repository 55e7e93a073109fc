"""A run watched in Chromium from Start to its end leaves the server's log clean (issue 26): the
live feed's files are never served with a length they do not have (h11's "Too little data for
declared Content-Length" was logged with a traceback while a tab polled them)."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from test_dashboard_e2e import (
    TRAIN_MS, WATCHED, epoch_points_js, metric, open_page, start_training, status_line,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.heavy]  # a whole watched run: CI runs it


def test_a_watched_run_leaves_no_traceback_in_the_server_log(page, server):
    start = server.log_path.stat().st_size  # the session's server: only this test's part of its log
    feed = []  # (status, url) of the panel's fetches of the live files
    page.on("response", lambda r: feed.append((r.status, r.url)) if "/app/static/live/" in r.url else None)
    open_page(page, server.url, "/train", "Train")
    run_id = start_training(page, **WATCHED)
    expect(status_line(page, run_id, "completed")).to_be_visible(timeout=TRAIN_MS)
    expect(metric(page, "Test accuracy")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    assert page.evaluate(epoch_points_js()) == 3, "the finished run's epoch chart should show 3 epochs"

    progress = [s for s, url in feed if url.endswith(f"/{run_id}.json")]
    figures = [s for s, url in feed if re.search(rf"/{run_id}\.[^/]+\.[0-9a-f]{{16}}\.json$", url)]
    assert len(progress) >= 3 and set(progress) == {200}, f"the panel's progress polls: {progress}"
    assert figures and set(figures) == {200}, f"the panel's figures fetches: {figures}"
    log = server.log_path.read_bytes()[start:].decode(errors="replace")
    for sign in ("Traceback", "LocalProtocolError", "Content-Length"):
        assert sign not in log, f"the server logged {sign!r} while the run was watched:\n{log[-3000:]}"
