"""Shared fixtures: a private artifacts folder per test, tiny synthetic data, no job left behind."""
from __future__ import annotations

import pytest

import shutil

from cifar_core.config import TrainConfig
from cifar_core.data import make_synthetic
from cifar_ui import browser_feed
from job_helpers import start_job, stop_everything

# The page tests' trained run: synthetic data, small enough for one epoch in seconds.
PAGE_QUICK = dict(data="synthetic", train_subset=600, test_subset=200, batch_size=32)


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A fresh CIFAR_ARTIFACTS_DIR, and synthetic data as the default source."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(root))
    monkeypatch.setenv("CIFAR10_DATA", "synthetic")
    # The Train page's live feed writes here, not into the checkout's static/ (the URLs are the same).
    monkeypatch.setattr(browser_feed, "_FEED", browser_feed.Feed(root=tmp_path / "live-feed"))
    return root



@pytest.fixture(scope="session")
def tiny_data():
    """600 training and 200 test images of the synthetic demo set."""
    return make_synthetic(600, 200, seed=1)


@pytest.fixture(autouse=True)
def _no_job_left_running(monkeypatch):  # monkeypatch first: the test's artifacts folder is still set below
    """A test that leaves a job running would make the next one's start fail as busy (and a sweep
    runner started by a page would take the next test's trials)."""
    yield
    from cifar_core.sweeps.runner import runner

    runner().shutdown(timeout=0)  # no new trial; the running one is stopped below
    runner().sweeps.clear()
    stop_everything()
    assert runner().shutdown(timeout=60), "the sweep runner did not end within 60 s of its job"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One run really trained on synthetic data (1 epoch), to be copied into each test's store."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFAR_ARTIFACTS_DIR", str(root))
        mp.setenv("CIFAR10_DATA", "synthetic")
        job = start_job(TrainConfig(epochs=1, **PAGE_QUICK))
        assert job.join(180), "training the session's run took over 180 s"
    snap = job.snapshot()
    assert snap.status == "completed", snap.error
    return root / "runs" / job.run_id


@pytest.fixture
def with_run(artifacts, finished_run):
    """The session's finished run, copied (timestamps kept) into this test's artifacts folder."""
    shutil.copytree(finished_run, artifacts / "runs" / finished_run.name)
    return finished_run.name
