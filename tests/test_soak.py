"""The overnight soak, short: bench/soak.py for 3 minutes with a shortened heartbeat. The real
dashboard server (started on the sweep from its Sweeps page in headless Chromium) and CLI workers
share one sweep and the queue while CLI workers are SIGKILLed and restarted, queued runs are
added and removed, and Train's Start is pressed; then every trial, run folder, the journal and the
server's resources are checked (the soak exits non-zero and prints FAIL lines when one fails).
About 5-7 minutes on a busy 2-core machine."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(720)
def test_short_soak_holds(tmp_path):
    if shutil.which("chromium") is None:
        if os.environ.get("CIFAR_REQUIRE_BROWSER"):
            pytest.fail("CIFAR_REQUIRE_BROWSER is set (CI) but chromium is not on PATH: apt-get install chromium")
        pytest.skip("Debian's chromium is not on PATH (apt-get install chromium)")
    out = tmp_path / "out"
    command = [sys.executable, "bench/soak.py", "--minutes", "3", "--trials", "3", "--kill-every", "45",
               "--heartbeat", "2", "--grace", "8", "--sample-seconds", "10", "--queue-every", "25",
               "--train-every", "70", "--drain-seconds", "90",
               # three or four samples per half: a looser CPU bound than the hour's 0.25 cores
               "--cpu-bound-cores", "0.5",
               "--artifacts", str(tmp_path / "artifacts"), "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=660,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"soak exited {proc.returncode}:\n{text[-8000:]}"
    assert "SOAK PASSED" in proc.stdout
    assert "SIGKILL worker" in proc.stdout  # at least one CLI worker was killed
    assert (out / "soak.json").is_file() and (out / "soak.txt").is_file()
