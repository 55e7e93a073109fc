"""The run report (cifar_core/insight/report.py) on a run really trained on synthetic data: what
it holds, the CLI that writes it, the pages' downloads, and bad input as one line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.data import CLASS_NAMES
from cifar_core.insight import evaluation
from cifar_core.insight.report import REPORT_FILE, ReportError, build_report, write_report
from test_pages import open_page, widget

ROOT = Path(__file__).resolve().parent.parent


def test_the_report_holds_the_assignments_write_up_and_nothing_from_the_network(with_run):
    run = runs.load_run(with_run)
    preds = evaluation.test_predictions(run)
    text = build_report(with_run)
    accuracy = float((preds.probabilities.argmax(1) == preds.labels).mean())
    assert f"test accuracy <b>{accuracy:.2%}</b>" in text
    first = text.split("The first 4 test images")[1].split("<h2>")[0]
    named = re.findall(r"predicted <b>(\w+)</b> \(\d+%\)<br>true (\w+)", first)
    assert len(named) == 4 and all(p in CLASS_NAMES and t in CLASS_NAMES for p, t in named)
    assert [t for _, t in named] == [CLASS_NAMES[y] for y in preds.labels[:4]]
    for section in ("Loss over epochs", "Accuracy over epochs", "Observations", "Confusion matrix",
                    "Calibration", "The worst mistakes", "Configuration"):
        assert section in text, section
    assert "<script" not in text and not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text and "url(" not in text
    assert text.count("data:image/png;base64,") >= 4


def test_the_cli_writes_the_report_whole_and_bad_input_is_one_line(with_run, artifacts, tmp_path):
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cifar_core", "report", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=240)

    done = cli(with_run)
    assert done.returncode == 0, done.stderr
    written = artifacts / "runs" / with_run / REPORT_FILE
    assert str(written) in done.stdout and written.read_text().endswith("</html>")
    out = tmp_path / "reports"
    out.mkdir()
    assert cli(with_run, "--out", str(out)).returncode == 0
    assert (out / f"{with_run}-{REPORT_FILE}").is_file()

    blocked = tmp_path / "read-only"
    blocked.mkdir()
    blocked.chmod(0o500)
    try:
        failed = cli(with_run, "--out", str(blocked / "r.html"))
        if os.geteuid() != 0:  # root writes anywhere: the check below needs a real refusal
            assert failed.returncode == 1 and failed.stderr.count("\n") == 1
            assert "cannot write the report" in failed.stderr and list(blocked.iterdir()) == []
    finally:
        blocked.chmod(0o700)
    missing_dir = cli(with_run, "--out", str(tmp_path / "no" / "such" / "r.html"))
    assert missing_dir.returncode == 1 and "cannot write the report" in missing_dir.stderr
    assert missing_dir.stderr.count("\n") == 1 and "Traceback" not in missing_dir.stderr
    unknown = cli("20990101-000000-abcdef")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: ") and "Traceback" not in unknown.stderr


def test_a_run_without_a_model_has_no_report(artifacts):
    path = runs.create_run(TrainConfig(data="synthetic", epochs=1))
    with pytest.raises(ReportError, match="no saved model"):
        write_report(path.name)
    assert not (path / REPORT_FILE).exists()


def test_evaluate_and_runs_offer_the_report_made_from_the_pages_predictions(with_run):
    from cifar_ui import cache

    evaluate = open_page("pages/evaluate.py")
    assert not evaluate.exception
    assert any(b.label == "Download the report (HTML)" for b in evaluate.get("download_button"))
    runs_page = open_page("pages/runs.py")
    assert any(b.label == "Report (HTML)" for b in runs_page.get("download_button"))
    html = cache.report_html(runs.load_run(with_run)).decode()
    assert html.startswith("<!DOCTYPE html>") and "The first 4 test images" in html
    assert np.isfinite(runs.load_run(with_run).test_accuracy)
