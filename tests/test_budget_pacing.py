"""A budgeted run keeps to its budget when the machine is slower than its plan: the pacer moves the
schedule's end (so the run still anneals) and ends training there. The real trainer on tiny data."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from cifar_core import recipes as recipe
from cifar_core.config import TrainConfig
from job_helpers import start_job
from cifar_core.models.keras_private import optimizer_schedule
from cifar_core.recipes.schedules import WarmupSchedule
from cifar_core.planning import pacing
from cifar_core.planning.pacing import make_pacer, steps_that_fit


def test_moving_the_end_re_lays_the_decay_inside_the_compiled_step():
    config = TrainConfig(lr_schedule="onecycle", warmup_epochs=1, epochs=10, learning_rate=0.1, lr_end_factor=0.0)
    schedule = WarmupSchedule(peak=0.1, kind="onecycle", warmup_steps=10, total_steps=100, end_factor=0.0)
    import tensorflow as tf

    at = tf.function(lambda step: schedule(step))  # the variable is read at each call, not baked in
    assert float(at(55)) == pytest.approx(0.1 * (1 - 45 / 90), rel=1e-5)
    schedule.set_total_steps(60)
    assert float(at(55)) == pytest.approx(0.1 * (1 - 45 / 50), rel=1e-5)
    assert float(at(60)) == pytest.approx(0.0, abs=1e-7)  # annealed at the new end
    assert WarmupSchedule(**schedule.get_config()).total_steps == 60  # a checkpoint keeps the moved end


@pytest.mark.parametrize("step, trained, speed, expected", [
    (100, 10.0, 10.0, 200),  # 10 s left at 10 steps/s: 100 more steps
    (100, 10.0, 50.0, 300),  # faster than planned: never past the plan
    (100, 25.0, 10.0, 101),  # over budget already: stop at the next step
])
def test_steps_that_fit_the_remaining_budget(step, trained, speed, expected):
    assert steps_that_fit(step, trained, budget_seconds=20.0, steps_per_second=speed, planned_steps=300) == expected


def test_a_pacer_keeps_lookahead_ending_with_the_schedule():
    lookahead = recipe.make_lookahead(TrainConfig(epochs=4, weight_averaging="lookahead"), steps_per_epoch=10)
    pacer = make_pacer(5.0, 40, steps_per_epoch=10, followers=[lookahead])
    pacer._schedule = None
    pacer.set_end(25, trained=3.0)
    assert lookahead.total == 25 and pacer.report["moves"] == [{"step": 0, "end": 25, "trained_seconds": 3.0}]
    for end in range(100, 100 + 2 * pacing.MAX_MOVES_RECORDED):
        pacer.set_end(end, trained=1.0)
    assert pacer.report["move_count"] == 1 + 2 * pacing.MAX_MOVES_RECORDED
    assert len(pacer.report["moves"]) == pacing.MAX_MOVES_RECORDED and pacer.report["moves"][-1]["end"] == end


def test_a_budgeted_run_slower_than_its_plan_ends_on_time_annealed(artifacts):
    """A plan of 30 epochs given a 3-second budget: the pacer ends it near 3 s of training, at a
    step whose learning rate is the schedule's final one, and plan.json records how."""
    config = TrainConfig(data="synthetic", train_subset=640, test_subset=64, batch_size=32, epochs=30,
                         lr_schedule="onecycle", warmup_epochs=0, learning_rate=0.002, lr_end_factor=0.0)
    plan = {"budget_seconds": 3.0, "chosen": {"label": "too long on purpose", "predicted_seconds": 3.0}}
    job = start_job(config, plan=plan)
    assert job.join(300)
    snap = job.snapshot()
    assert snap.status == "completed", snap.error
    record = json.loads((job.run_dir / "plan.json").read_text())
    outcome, pacing = record["outcome"], record["outcome"]["pacing"]
    assert pacing["planned_steps"] == 30 * 20 and pacing["ended_early"] and pacing["moves"]
    assert pacing["steps"] < 30 * 20 and outcome["epochs"] < 30
    # when it ended is shown with a clock the test drives (below): this machine may be loaded
    model = keras.saving.load_model(job.run_dir / "model.keras", safe_mode=True)
    schedule = optimizer_schedule(model.optimizer)
    steps = int(model.optimizer.iterations.numpy())
    assert steps == pacing["steps"] and schedule.total_steps == pacing["moves"][-1]["end"]
    assert float(schedule(steps)) == pytest.approx(0.0, abs=1e-6 + 0.002 * 0.02)  # annealed, within a move
    assert np.isfinite(snap.metrics["test_accuracy"])


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_the_pacer_ends_where_the_budget_runs_out_on_a_clock_it_is_given(artifacts, monkeypatch):
    """Each step takes 0.05 s on the pacer's clock: a 2-second budget holds about 40 of the
    plan's 600 steps, and the run ends within one look (CHECK_EVERY steps) of that."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(pacing, "clock", lambda: next(ticks) * 0.05)  # one tick per batch end or epoch start
    config = TrainConfig(data="synthetic", train_subset=640, test_subset=64, batch_size=32, epochs=30,
                         lr_schedule="onecycle", warmup_epochs=0, learning_rate=0.002, lr_end_factor=0.0)
    job = start_job(config, plan={"budget_seconds": 2.0, "chosen": {"label": "paced"}})
    assert job.join(300) and job.snapshot().status == "completed", job.snapshot().error
    pacing_record = json.loads((job.run_dir / "plan.json").read_text())["outcome"]["pacing"]
    assert 40 - pacing.CHECK_EVERY <= pacing_record["steps"] <= 40 + pacing.CHECK_EVERY, pacing_record
    assert pacing_record["trained_seconds"] == pytest.approx(2.0, abs=pacing.CHECK_EVERY * 0.05 + 0.1)
