"""The learning-rate finder (the range test) through its real entry points: the core on the real
network, optimizer and synthetic data, the CLI in a subprocess, the Train page through AppTest."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cifar_core import jobs, trainer_lock
from cifar_core.charts.lr_finder import LR_FINDER_TITLE, lr_finder_curve
from cifar_core.config import TrainConfig
from cifar_core.data import DataError
from cifar_core.training import lr_finder
from cifar_ui import access

from test_cli import run_cli
from test_pages import QUICK, chart_titles, open_page, raised, texts, widget

TINY = dict(data="synthetic", train_subset=300, test_subset=50, batch_size=16)


def no_run_folder(artifacts) -> bool:
    runs_dir = artifacts / "runs"
    return not runs_dir.exists() or not any(runs_dir.iterdir())


def test_the_rate_grows_exponentially_until_the_loss_diverges_and_the_suggestion_follows_its_rule(artifacts):
    steps = []
    result = lr_finder.find_learning_rate(TrainConfig(**TINY), num_steps=100,
                                          on_step=lambda *a: steps.append(a))
    lrs = np.array(result.learning_rates)
    assert lrs[0] == pytest.approx(lr_finder.DEFAULT_START_LR)
    ratios = lrs[1:] / lrs[:-1]
    assert ratios == pytest.approx(np.full(len(ratios), (10 / 1e-5) ** (1 / 99)))  # one factor, step after step
    # Adam up to a rate of 10 blows up: the test stops there, the last point over 4x the lowest
    assert result.ended == "diverged" and 3 < len(lrs) < 100
    assert result.smoothed[-1] > lr_finder.DIVERGE_FACTOR * min(result.smoothed)
    assert len(result.losses) == len(result.smoothed) == len(lrs) == len(steps)
    assert result.smoothed == pytest.approx(lr_finder.smooth_losses(result.losses, lr_finder.DEFAULT_SMOOTHING))
    # the suggestion: a tenth of the rate at the lowest smoothed loss, inside the rates taken
    lowest = lrs[int(np.argmin(result.smoothed))]
    assert (result.rule, result.lowest_loss_lr) == ("minimum", pytest.approx(lowest))
    assert result.suggestion == pytest.approx(float(f"{lowest / 10:.2g}"))
    assert lrs[0] <= result.suggestion <= lrs[-1]
    assert "tenth of the rate at the lowest smoothed loss" in result.rule_text
    if result.steepest_rule_lr is not None:  # the other rule: somewhere before the lowest point
        assert lrs[0] <= result.steepest_rule_lr < lowest
    assert result.batch_size == 16 and result.precision == "float32"
    assert no_run_folder(artifacts)  # nothing written: no run, no checkpoint


def test_a_range_that_never_diverges_takes_every_step_and_the_steepest_rule_is_chosen_on_request(artifacts):
    result = lr_finder.find_learning_rate(TrainConfig(**TINY), start_lr=1e-4, end_lr=1e-2, num_steps=12,
                                          rule="steepest")
    assert result.ended == "completed" and len(result.learning_rates) == 12
    assert result.learning_rates[-1] == pytest.approx(1e-2)
    assert result.rule == "steepest" and result.suggestion == result.steepest_rule_lr
    if result.suggestion is not None:
        assert 1e-4 <= result.suggestion <= 1e-2
    else:
        assert result.note  # says why the curve gives none
    assert no_run_folder(artifacts)


def test_the_rules_on_a_hand_made_curve():
    lrs = list(lr_finder.exponential_rates(1e-5, 10, 61))  # a decade every 10 steps
    loss = [2.3 - 1.5 / (1 + math.exp(-(math.log10(r) + 3) * 4)) for r in lrs]  # falls fastest at 1e-3 ...
    loss = [v if r < 1e-1 else v + (math.log10(r) + 1) * 3 for r, v in zip(lrs, loss)]  # ... rises after 0.1
    rates, lowest, _ = lr_finder.suggest(lrs, loss)
    assert lowest == pytest.approx(0.1)
    assert rates["minimum"] == pytest.approx(0.01)
    assert rates["steepest"] == pytest.approx(1e-3)
    rates, _, note = lr_finder.suggest(lrs[:20], sorted(loss[:20]))  # only rising
    assert rates == {"minimum": None, "steepest": None} and "start the range lower" in note


def test_refused_while_a_job_trains_and_beside_another_finder_and_it_refuses_a_start(artifacts):
    job = jobs.start(TrainConfig(epochs=50, **QUICK))  # a job process holds the machine's trainer
    with pytest.raises(trainer_lock.JobBusyError, match=f"busy: training run {job.run_id}"):
        lr_finder.find_learning_rate(TrainConfig(**TINY), num_steps=10)
    job.stop()
    assert job.wait(60)

    inner = []

    def beside_the_finder(step, *_):  # while the finder measures, the machine is its alone
        if step == 1:
            with pytest.raises(trainer_lock.JobBusyError, match="busy: the learning-rate finder") as caught:
                lr_finder.find_learning_rate(TrainConfig(**TINY), num_steps=10)
            inner.append(caught.value)
            with pytest.raises(trainer_lock.JobBusyError, match="busy: the learning-rate finder") as caught:
                jobs.start(TrainConfig(epochs=1, **QUICK))  # a Start from another tab or the CLI
            inner.append(caught.value)

    lr_finder.find_learning_rate(TrainConfig(**TINY), num_steps=5, on_step=beside_the_finder)
    assert len(inner) == 2
    assert [p.name for p in (artifacts / "runs").iterdir()] == [job.run_id]  # only the job's own run
    assert trainer_lock.holder() is None


def test_bad_input_is_one_clear_error(artifacts):
    with pytest.raises(DataError, match="does not exist"):
        lr_finder.find_learning_rate(TrainConfig(**{**TINY, "data": str(artifacts / "no-such-data")}))
    with pytest.raises(ValueError, match="range must grow"):
        lr_finder.find_learning_rate(TrainConfig(**TINY), start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="unknown rule"):
        lr_finder.find_learning_rate(TrainConfig(**TINY), rule="valley")
    assert no_run_folder(artifacts)


def test_the_chart_has_a_log_rate_axis_and_marks_the_suggestion():
    lrs = list(lr_finder.exponential_rates(1e-5, 10, 20))
    fig = lr_finder_curve(lrs, [2.3] * 20, [2.3] * 20, 1e-3, "minimum", others=[("steepest", 3e-4)])
    assert fig.layout.title.text == LR_FINDER_TITLE and fig.layout.xaxis.type == "log"
    names = [t.name for t in fig.data]
    assert names == ["loss per step", "smoothed loss", "steepest 0.0003", "suggested 0.001 (minimum)"]
    assert list(fig.data[-1].x) == [1e-3, 1e-3]
    assert lr_finder_curve([], [], []).layout.annotations  # no steps: says so


# --- the CLI ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_cli_lr_find_prints_the_curve_and_a_suggestion_and_writes_no_run(artifacts, tmp_path):
    plot, table = tmp_path / "lr.html", tmp_path / "lr.csv"
    done = run_cli("lr-find", "--data", "synthetic", "--train-subset", "300", "--batch-size", "16",
                   "--steps", "40", "--plot", str(plot), "--csv", str(table), artifacts=artifacts)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "range test: 40 steps of 16 images" in out and "(rate: smoothed loss)" in out
    assert "suggested learning rate:" in out and "rule minimum" in out
    assert "the recipe's own learning rate: 0.001" in out
    rows = table.read_text().splitlines()
    assert rows[0] == "step,learning_rate,loss,smoothed_loss" and 3 < len(rows) <= 41
    assert "plotly" in plot.read_text()[:5000].lower()
    assert no_run_folder(artifacts)


def test_cli_lr_find_with_an_unreadable_source_is_one_line(artifacts):
    done = run_cli("lr-find", "--data", str(artifacts / "no-such-data"), artifacts=artifacts, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "error: data source" in done.stderr
    assert "Traceback" not in done.stderr and no_run_folder(artifacts)


# --- the Train page -----------------------------------------------------------------------

def fill_tiny(at) -> None:
    widget(at.number_input, "Batch size").set_value(TINY["batch_size"])
    widget(at.number_input, "Train images").set_value(TINY["train_subset"])
    widget(at.selectbox, "Data source").set_value("synthetic")


@pytest.mark.slow
def test_train_page_finds_a_rate_shows_the_chart_and_fills_the_form(artifacts):
    at = open_page("pages/train.py")
    find = widget(at.button, "Find a learning rate")
    assert not find.disabled and "range test" in find.help
    fill_tiny(at)
    find.click().run(timeout=180)
    assert not at.exception, raised(at)
    assert not at.error, texts(at.error)
    assert LR_FINDER_TITLE in chart_titles(at)
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if json.loads(c.proto.spec)["layout"]["title"]["text"] == LR_FINDER_TITLE)
    assert chart["layout"]["xaxis"]["type"] == "log"
    suggested = [t for t in chart["data"] if t["name"].startswith("suggested")]
    assert len(suggested) == 1
    rate = suggested[0]["x"][0]
    assert f"Suggested learning rate: {rate:.2g}" in texts(at.markdown)
    assert widget(at.number_input, "Learning rate (peak)").value == pytest.approx(0.001)

    widget(at.button, "Use this rate").click().run()
    assert not at.exception, raised(at)
    assert widget(at.number_input, "Learning rate (peak)").value == pytest.approx(rate)
    assert widget(at.number_input, "Batch size").value == TINY["batch_size"]  # the rest of the form kept
    assert trainer_lock.holder() is None and no_run_folder(artifacts)  # no job, no run


def test_train_page_finder_is_disabled_when_locked_and_while_a_job_trains(artifacts, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, "s3cret lab")
    at = open_page("pages/train.py")
    find = widget(at.button, "Find a learning rate")
    assert find.disabled and "Locked" in find.help  # AppTest, like a browser, cannot press it
    monkeypatch.delenv(access.PASSWORD_ENV)

    job = jobs.start(TrainConfig(epochs=50, **QUICK))
    at = open_page("pages/train.py")
    find = widget(at.button, "Find a learning rate")
    assert find.disabled and "holds this machine's trainer" in find.help
    job.stop()
    assert job.wait(60)
