"""The Sweeps page and Train's Add to queue through Streamlit's AppTest on the real pages: a
sweep created from the form and started on this server trains real trials; the queue lists,
removes and (through the server's runner) trains what Train added."""
from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.sweeps import studies
from cifar_core.sweeps.runner import runner
from cifar_core.sweeps.storage import open_storage
from test_pages import chart_titles, open_page, texts, widget


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def fill_sweep_form(at, name: str, trials: int = 2, start_here: bool = True) -> None:
    widget(at.text_input, "Sweep name").set_value(name)
    widget(at.text_area, "Search space: one FIELD=SPEC per line").set_value("learning_rate=0.1..1.0:log\ndropout=0,0.1")
    widget(at.number_input, "Epochs per trial").set_value(1)
    widget(at.number_input, "Trials").set_value(trials)
    widget(at.number_input, "Train images").set_value(300)
    widget(at.number_input, "Test images").set_value(100)
    widget(at.checkbox, "Start it on this server now").set_value(start_here)


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_a_sweep_created_on_the_page_trains_its_trials_on_this_server(artifacts):
    at = open_page("pages/sweeps.py")
    fill_sweep_form(at, "page-sweep")
    widget(at.button, "Create sweep").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "page-sweep" in runner().sweeps
    storage = open_storage()
    wait_until(lambda: sum(t.state == TrialState.COMPLETE for t in
                           optuna.load_study(study_name="page-sweep", storage=storage).get_trials()) == 2,
               240, "both trials to complete")
    at.run()
    assert not at.exception, [e.proto.message for e in at.exception]
    assert "page-sweep: 2 of 2 trials (2 complete); best test accuracy tta" in texts(at.markdown)
    table = at.dataframe[0].value
    assert list(table["state"]) == ["complete", "complete"] and set(table.columns) >= {"learning_rate", "dropout", "run"}
    for run_id in table["run"]:
        run = runs.load_run(run_id)
        assert run.status == "completed" and "sweep:page-sweep" in run.tags
    titles = chart_titles(at)
    assert "Best test accuracy tta against training minutes" in titles
    assert {"Optimization history", "Parallel coordinates", "Parameter importances"} <= set(titles)
    assert "Intermediate values (validation accuracy per epoch)" in titles


def test_bad_sweeps_are_refused_on_the_page_with_the_reason(artifacts):
    at = open_page("pages/sweeps.py")
    fill_sweep_form(at, "bad", start_here=False)
    widget(at.text_area, "Search space: one FIELD=SPEC per line").set_value("learning_rate=0.5..0.1")
    widget(at.button, "Create sweep").click().run()
    assert "empty or reversed" in texts(at.error)
    assert studies.names() == []


def test_stop_on_the_page_stops_the_sweep_for_every_worker(artifacts):
    at = open_page("pages/sweeps.py")
    fill_sweep_form(at, "to-stop", trials=50, start_here=False)
    widget(at.button, "Create sweep").click().run()
    assert "No trial yet" in texts(at.info)
    widget(at.button, "Stop sweep").click().run()
    assert not at.exception
    assert studies.load("to-stop")[0].stopped and widget(at.button, "Start on this server").disabled


def test_pages_under_apptest_start_no_runner_behind_the_tests_back(artifacts):
    """AppTest mocks Streamlit's Runtime while a script runs; only a served lab trains its queue
    (the e2e queue test shows a real server does)."""
    open_page("pages/sweeps.py")
    assert not runner().running


def test_add_to_queue_from_train_lists_on_sweeps_and_removes(artifacts):
    at = open_page("pages/train.py")
    widget(at.number_input, "Train images").set_value(300)
    widget(at.number_input, "Test images").set_value(100)
    widget(at.selectbox, "Data source").set_value("synthetic")
    widget(at.text_input, "Run name").set_value("queued one")
    widget(at.button, "Add to queue").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Queued as #1" in texts(at.success)
    sweeps_page = open_page("pages/sweeps.py")
    queue = sweeps_page.dataframe[-1].value
    assert list(queue["state"]) == ["waiting"] and list(queue["name"]) == ["queued one"]
    widget(sweeps_page.button, "Remove from queue").click().run()
    assert not sweeps_page.exception and not sweeps_page.error, texts(sweeps_page.error)
    assert "Empty." in texts(sweeps_page.caption)


def test_the_servers_runner_trains_the_queue(artifacts):
    from cifar_core.recipes.presets import preset_config

    plan = {"budget_seconds": 60.0, "chosen": {"label": "a plan made when it was queued", "predicted_seconds": 30.0}}
    studies.enqueue(preset_config("assignment", epochs=1, data="synthetic", train_subset=200, test_subset=100,
                                  batch_size=32), name="from the queue", plan=plan)
    runner().start()

    def states() -> list[str]:
        sweep, study = studies.load(studies.QUEUE)
        return [r["state"] for r in studies.trial_rows(sweep, study)]

    wait_until(lambda: states() == ["complete"], 180, "the queued run to be trained and its trial told")
    trained = next(r for r in runs.list_runs() if r.name == "from the queue")
    assert trained.plan["chosen"] == plan["chosen"] and trained.plan["outcome"]["status"] == "completed"


@pytest.mark.parametrize("locked", ["password", "readonly"])
def test_locked_and_read_only_labs_offer_no_sweep_or_queue_action(artifacts, monkeypatch, locked):
    if locked == "password":
        monkeypatch.setenv("CIFAR_LAB_PASSWORD", "s3cret")
    else:
        monkeypatch.setenv("CIFAR_LAB_READONLY", "1")
    studies.create(studies.define("watched", ["dropout=0,0.1"], TrainConfig(), trials=2, sampler="grid"))
    at = open_page("pages/sweeps.py")
    labels = {b.label: b for b in at.button}
    if locked == "readonly":
        assert "Create sweep" not in labels and "Start on this server" not in labels and "Stop sweep" not in labels
    else:
        assert labels["Create sweep"].disabled and labels["Start on this server"].disabled
        assert labels["Stop sweep"].disabled
    assert runner().sweeps == []
