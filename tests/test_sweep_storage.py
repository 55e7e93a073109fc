"""The sweep storage and studies used as Optuna designs them, on real journal files and SQLite:
one storage per process and URL, heartbeats that fail and retry a dead worker's trial without
comparing machines' clocks, reads that write nothing, broken sweeps listed and skipped, queue
numbers from #1, removal by a user attribute, a grid trained once per point."""
from __future__ import annotations

import io
import threading
import time
import warnings

import optuna
import pytest
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import TrialState

from cifar_core import cli
from cifar_core.config import TrainConfig
from cifar_core.sweeps import storage as sweep_storage
from cifar_core.sweeps import studies
from cifar_core.sweeps.storage import SweepError, open_storage
from test_pages import open_page, texts, widget

GRACE = 2  # seconds a test reader watches an unchanged heartbeat before it calls the trial stale


def journal(artifacts):
    return artifacts / "sweeps" / "journal.log"


def other_process(path) -> optuna.storages.JournalStorage:
    """What another worker process (or machine) has: its own plain storage on the same file."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


# --- one storage per process and URL -----------------------------------------------------------

def test_one_storage_object_per_url_that_still_sees_other_writers(artifacts):
    first = open_storage()
    assert open_storage() is first and open_storage(str(journal(artifacts))) is first
    assert open_storage(heartbeat_seconds=1, grace_seconds=GRACE) is not first  # its own heartbeat settings
    studies.create(studies.define("mine", ["dropout=0,0.1"], TrainConfig(), sampler="grid"))
    optuna.create_study(study_name="theirs", storage=other_process(journal(artifacts)))
    assert [s.name for s in studies.load_all()] == ["mine", "theirs"]  # the cached storage replays others' lines
    journal(artifacts).unlink()  # someone clears the sweeps: the next storage starts from the new file
    assert open_storage() is not first and studies.load_all() == []


# --- heartbeats ----------------------------------------------------------------------------------

def test_storages_come_with_optunas_heartbeat_and_retry(artifacts, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no experimental or deprecation notice reaches the user
        file_storage = open_storage()
        db_storage = open_storage(f"sqlite:///{tmp_path / 'sweeps.db'}")
    for s in (file_storage, db_storage):
        assert isinstance(s, BaseHeartbeat) and is_heartbeat_enabled(s)
        assert s.get_heartbeat_interval() == sweep_storage.HEARTBEAT_SECONDS == 20
        callback = s.get_heartbeat_stale_trial_callback()
        assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
        assert callback._max_retry == sweep_storage.MAX_RETRY == 3
    assert db_storage.grace_period == sweep_storage.GRACE_SECONDS == 60


def test_a_trial_whose_heartbeat_stops_is_failed_and_enqueued_again_a_beating_one_is_not(artifacts):
    path = journal(artifacts)
    path.parent.mkdir(parents=True)
    dead = optuna.create_study(study_name="s", storage=other_process(path))
    lost = dead.ask()  # a worker took this trial and died: nothing beats for it
    lost.suggest_float("dropout", 0.0, 0.5)
    lost.set_user_attr("config", {"epochs": 2})
    # a live worker, another storage object on the same file: Optuna's own loop beats every second
    beating = sweep_storage.JournalHeartbeatStorage(
        optuna.storages.journal.JournalFileBackend(str(path)), heartbeat_seconds=1, grace_seconds=GRACE)
    release, started = threading.Event(), threading.Event()

    def objective(trial):
        started.set()
        release.wait(30)
        return 1.0

    live = threading.Thread(target=optuna.load_study(study_name="s", storage=beating).optimize,
                            args=(objective,), kwargs={"n_trials": 1})
    live.start()
    try:
        assert started.wait(30)
        reader = open_storage(heartbeat_seconds=1, grace_seconds=GRACE)
        study = optuna.load_study(study_name="s", storage=reader)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a fresh reader first watches a grace period
            assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}
            time.sleep(GRACE + 1.5)
            optuna.storages.fail_stale_trials(study)
        by_number = {t.number: t for t in study.get_trials()}
        assert by_number[lost.number].state == TrialState.FAIL
        assert by_number[1].state == TrialState.RUNNING  # its beat kept changing
        retry = by_number[2]
        assert retry.state == TrialState.WAITING and retry.params == {"dropout": lost.params["dropout"]}
        assert retry.user_attrs == {"config": {"epochs": 2}} and retry.system_attrs["failed_trial"] == lost.number
    finally:
        release.set()
        live.join(30)
    done = optuna.load_study(study_name="s", storage=reader).get_trials()[1]
    assert done.state == TrialState.COMPLETE
    beating.record_heartbeat(done._trial_id)  # Optuna's heartbeat thread may beat once after the end


# --- reads write nothing -------------------------------------------------------------------------

def test_reading_sweeps_and_the_queue_appends_nothing_to_the_journal(artifacts):
    studies.create(studies.define("grid", ["dropout=0,0.1"], TrainConfig(), sampler="grid"))
    studies.enqueue(TrainConfig(epochs=1), name="one")
    lines = len(journal(artifacts).read_text().splitlines())
    for _ in range(100):
        for name in (studies.QUEUE, "grid"):
            sweep, study = studies.load(name)
            studies.summary(sweep, studies.trial_rows(sweep, study))
        studies.names()
        studies.load_all()
    assert len(journal(artifacts).read_text().splitlines()) == lines


def test_the_queue_is_created_once_even_by_racing_processes(artifacts):
    studies.load(studies.QUEUE)
    other_storage = other_process(journal(artifacts))
    study = optuna.create_study(study_name=studies.QUEUE, storage=other_storage, load_if_exists=True)
    assert len(optuna.get_all_study_summaries(other_storage)) == 1 and study.user_attrs["kind"] == "queue"


# --- broken sweeps -------------------------------------------------------------------------------

def _broken_studies() -> None:
    """Studies another version (or another program) left: each unreadable its own way."""
    s = open_storage()
    for name, attrs in (("gone-field", {"kind": "sweep", "base": TrainConfig().to_dict(), "space": ["lr=1..2"]}),
                        ("no-base", {"kind": "sweep"}),
                        ("odd-base", {"kind": "sweep", "base": {"epochs": "many"}, "space": "dropout=0..1"}),
                        ("not-ours", {})):
        study = optuna.create_study(study_name=name, storage=s)
        for key, value in attrs.items():
            study.set_user_attr(key, value)


def test_a_broken_sweep_is_listed_in_one_line_and_skipped(artifacts, capsys):
    studies.create(studies.define("good", ["dropout=0,0.1"], TrainConfig(), sampler="grid"))
    _broken_studies()
    listed = studies.load_all()
    assert [s.name for s in listed] == ["good", "gone-field", "no-base", "odd-base", "not-ours"]
    assert isinstance(listed[0], studies.Sweep)
    assert all(isinstance(s, studies.Broken) and "\n" not in s.reason for s in listed[1:])
    assert studies.names() == ["good"]
    with pytest.raises(SweepError, match="no-base"):
        studies.load("no-base")
    out = io.StringIO()
    assert cli.main(["sweep", "list"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("good: 0 of 2 trials") and len(lines) == 5
    assert all("cannot be read" in line for line in lines[1:])


def test_the_sweeps_page_lists_a_broken_sweep_beside_a_good_one(artifacts):
    studies.create(studies.define("good", ["dropout=0,0.1"], TrainConfig(), sampler="grid"))
    _broken_studies()
    at = open_page("pages/sweeps.py")
    assert not at.exception
    assert widget(at.selectbox, "Sweep").options == ["good"]
    assert "good: 0 of 2 trials" in texts(at.markdown)
    warned = texts(at.warning)
    assert all(name in warned for name in ("gone-field", "no-base", "odd-base", "not-ours"))


# --- the queue: numbers from #1, removal by a user attribute -------------------------------------

def test_queue_numbers_start_at_one_for_people(artifacts, capsys):
    assert studies.enqueue(TrainConfig(epochs=1), name="first") == 1
    assert studies.enqueue(TrainConfig(epochs=1), name="second") == 2
    sweep, study = studies.load(studies.QUEUE)
    assert [r["trial"] for r in studies.trial_rows(sweep, study)] == [1, 2]
    assert [t.number for t in study.get_trials()] == [0, 1]  # Optuna's own numbers stay inside
    out = io.StringIO()
    assert cli.main(["queue", "list"], out=out) == 0
    assert "#1: state waiting, name first" in out.getvalue() and "#0" not in out.getvalue()
    at = open_page("pages/sweeps.py")
    assert list(at.dataframe[-1].value["trial"]) == [1, 2]


def test_remove_marks_the_trial_and_says_whether_it_had_started(artifacts, capsys):
    for name in ("waits", "runs", "ends"):
        studies.enqueue(TrainConfig(epochs=1), name=name)
    s = open_storage()
    study_id = s.get_study_id_from_name(studies.QUEUE)
    ids = [s.get_trial_id_from_study_id_trial_number(study_id, n) for n in range(3)]
    assert s.set_trial_state_values(ids[1], TrialState.RUNNING)  # a worker popped #2 ...
    assert studies.remove(1) == "waiting"
    assert studies.remove(2) == "running"
    s.set_trial_user_attr(ids[1], "run_id", "r1")  # ... and goes on writing to it: nothing raises
    assert s.get_trial(ids[0]).state == TrialState.WAITING and s.get_trial(ids[0]).user_attrs["removed"] is True
    assert s.get_trial(ids[1]).state == TrialState.RUNNING and s.get_trial(ids[1]).user_attrs["removed"] is True
    s.set_trial_state_values(ids[2], TrialState.RUNNING)
    s.set_trial_state_values(ids[2], TrialState.COMPLETE, [0.5])
    for number, message in ((3, "has finished"), (1, "already removed"), (9, "no run #9 in the queue")):
        with pytest.raises(SweepError, match=message):
            studies.remove(number)
    sweep, study = studies.load(studies.QUEUE)
    assert [r["state"] for r in studies.trial_rows(sweep, study)] == ["removed", "removed", "complete"]
    out = io.StringIO()
    assert cli.main(["queue", "remove", "9"], out=out) == 1
    studies.enqueue(TrainConfig(epochs=1), name="more")
    assert cli.main(["queue", "remove", "4"], out=out) == 0 and "removed #4" in out.getvalue()


# --- grid sweeps -------------------------------------------------------------------------------

def test_a_grid_sweep_trains_each_point_once(artifacts):
    with pytest.raises(SweepError, match="4 points"):
        studies.define("big", ["dropout=0,0.1", "label_smoothing=0,0.1"], TrainConfig(), trials=5, sampler="grid")
    assert studies.define("small", ["dropout=0,0.1", "label_smoothing=0,0.1"], TrainConfig(), trials=3,
                          sampler="grid").trials == 3
    at = open_page("pages/sweeps.py")
    widget(at.selectbox, "Sampler").set_value("grid").run()
    assert "Trials" not in [n.label for n in at.number_input]  # the grid's size is the count
    widget(at.text_input, "Sweep name").set_value("grid-page")
    widget(at.text_area, "Search space: one FIELD=SPEC per line").set_value("dropout=0,0.1\nlabel_smoothing=0,0.1")
    widget(at.checkbox, "Start it on this server now").set_value(False)
    widget(at.button, "Create sweep").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert studies.load("grid-page")[0].trials == 4
    assert "grid-page: 0 of 4 trials" in texts(at.markdown)


# --- what viewers see ------------------------------------------------------------------------------

def test_the_page_names_the_journal_inside_the_artifacts_folder_not_its_absolute_path(artifacts):
    at = open_page("pages/sweeps.py")
    captions = texts(at.caption)
    assert "sweeps/journal.log" in captions and str(artifacts) not in captions
