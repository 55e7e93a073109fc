"""Shared fixtures: a private artifacts folder per test, tiny synthetic data, no job left behind."""
from __future__ import annotations

import pytest

from cifar_core import training
from cifar_core.data import make_synthetic


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A fresh CIFAR_ARTIFACTS_DIR, and synthetic data as the default source."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(root))
    monkeypatch.setenv("CIFAR10_DATA", "synthetic")
    return root


@pytest.fixture(scope="session")
def tiny_data():
    """600 training and 200 test images of the synthetic demo set."""
    return make_synthetic(600, 200, seed=1)


@pytest.fixture(autouse=True)
def _no_job_left_running():
    """A test that leaves a job running would make the next one's start fail as busy."""
    yield
    job = training.current_job()
    if job is not None and job.is_alive:
        job.stop()
        assert job.join(120), "a training job did not stop within 120 s"
