"""Sweeps and the queue on Optuna, through the real CLI, worker and trainer on tiny synthetic data:
space parsing and every bad input, two worker processes sharing one journal, a killed worker's
trial retried, pruning, the queue surviving its worker's death."""
from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cifar_core import cli, runs
from cifar_core.config import TrainConfig
from cifar_core.recipes.presets import preset_config
from cifar_core.sweeps import space, studies, worker
from cifar_core.sweeps.storage import open_storage

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--data", "synthetic", "--train-subset", "300", "--test-subset", "100", "--batch-size", "32"]
TINY_CONFIG = dict(data="synthetic", train_subset=300, test_subset=100, batch_size=32)


def run_cli(args, capsys) -> tuple[int, str, str]:
    out = io.StringIO()
    code = cli.main(args, out=out)
    return code, out.getvalue(), capsys.readouterr().err


def trials(name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage()).get_trials()


# --- the space -------------------------------------------------------------------------------

def test_space_specs_become_optuna_dimensions():
    lr, smoothing, epochs, widths, opt = space.parse_space(
        ["learning_rate=1e-4..1e-1:log", "label_smoothing=0..0.3", "epochs=2..6", "widths=16/64/64,32/128/128",
         "optimizer=sgd,adam"])
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-4, 1e-1, True, False)
    assert (smoothing.low, smoothing.high, smoothing.log) == (0.0, 0.3, False)
    assert epochs.integer and (epochs.low, epochs.high) == (2, 6)
    assert widths.choices == ("16/64/64", "32/128/128") and space.to_config_value("widths", "16/64/64") == (16, 64, 64)
    assert opt.choices == ("sgd", "adam")
    study = optuna.create_study()
    trial = study.ask()
    values = {d.field: d.suggest(trial) for d in (lr, epochs, widths)}
    assert 1e-4 <= values["learning_rate"] <= 1e-1 and isinstance(values["epochs"], int)
    TrainConfig(**values)  # what a trial suggests, TrainConfig takes


@pytest.mark.parametrize("spec, message", [
    ("lr=1e-4..1e-1", "unknown field 'lr'"),
    ("learning_rate", "write FIELD=SPEC"),
    ("learning_rate=", "no values given"),
    ("learning_rate=0.1..0.01", "empty or reversed"),
    ("learning_rate=0.1..0.1", "empty or reversed"),
    ("learning_rate=0..0.1:log", "log range must stay above zero"),
    ("learning_rate=0.1..2", "learning_rate must be a number in (0, 1]"),
    ("epochs=1.5..3", "not an integer"),
    ("optimizer=sgd,lion", "optimizer must be one of"),
    ("architecture=1..3", "takes choices"),
    ("dropout=0..0.5:ln", "unknown scale"),
    ("preset=fast,best", "unknown field 'preset'"),
    ("widths=16,64,64", "widths are written 16/64/64"),
])
def test_bad_spaces_are_refused_with_the_reason(spec, message):
    with pytest.raises(space.SpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        space.parse_space([spec])


@pytest.mark.parametrize("args, message", [
    (["--space", "lr=1..2"], "unknown field 'lr'"),
    (["--space", "learning_rate=0.1..0.01"], "empty or reversed"),
    (["--space", "learning_rate=0..0.1:log"], "above zero"),
    (["--space", "dropout=0..1"], "dropout must be a number in [0, 1)"),
    (["--space", "dropout=0..0.5", "--space", "dropout=0.1,0.2"], "searched twice"),
    (["--space", "dropout=0..0.5", "--sampler", "grid"], "grid sampler needs choices"),
    (["--space", "dropout=0..0.5", "--objective", "accuracy-and-time"], "--pruner none"),
    ([], "at least one --space"),
    (["--space", "dropout=0..0.5", "--storage", "postgresql://lab:secret@127.0.0.1:1/lab"], "cannot reach the sweep storage"),
])
def test_sweep_create_refuses_bad_input_in_one_line_before_any_trial(artifacts, capsys, args, message):
    trials_arg = [] if "--sampler" in args else ["--trials", "2"]
    code, out, err = run_cli(["sweep", "create", "bad", *trials_arg, *TINY, *args], capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert "secret" not in err
    assert not (artifacts / "runs").exists()


def test_a_database_written_by_another_optuna_version_is_named(artifacts, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.storages.RDBStorage(url)  # creates Optuna's tables (open_storage would keep this one for the process)
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'v0.9.0.a'")
    code, out, err = run_cli(["sweep", "list", "--storage", url], capsys)
    assert code == 1 and "written by another Optuna version" in err and len(err.strip().splitlines()) == 1


def test_sweep_names_and_duplicates(artifacts, capsys):
    assert run_cli(["sweep", "create", "a b", "--trials", "1", "--space", "dropout=0..0.5"], capsys)[0] == 1
    assert run_cli(["sweep", "create", "queue", "--trials", "1", "--space", "dropout=0..0.5"], capsys)[0] == 1
    assert run_cli(["sweep", "create", "ok", "--trials", "1", "--space", "dropout=0..0.5", *TINY], capsys)[0] == 0
    code, out, err = run_cli(["sweep", "create", "ok", "--trials", "1", "--space", "dropout=0..0.5", *TINY], capsys)
    assert code == 1 and "already exists" in err
    code, out, err = run_cli(["sweep", "status", "nope"], capsys)
    assert code == 1 and "no sweep named 'nope'; known: ok" in err


# --- running sweeps ----------------------------------------------------------------------------

def worker_process(*args: str, env_artifacts: Path) -> subprocess.Popen:
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(env_artifacts), "CIFAR10_DATA": "synthetic"}
    return subprocess.Popen([sys.executable, "-m", "cifar_core", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.heavy
def test_two_worker_processes_share_a_sweep_and_no_trial_runs_twice(artifacts, capsys):
    code, out, err = run_cli(["sweep", "create", "pair", "--trials", "4", "--pruner", "none", "--sampler", "random",
                              "--space", "learning_rate=0.05..0.5:log", "--preset", "fast", "--epochs", "1", *TINY],
                             capsys)
    assert code == 0, err
    workers = [worker_process("sweep", "run", "pair", env_artifacts=artifacts) for _ in range(2)]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    done = trials("pair")
    assert len(done) == 4 and all(t.state == TrialState.COMPLETE for t in done)
    run_ids = [t.user_attrs["run_id"] for t in done]
    assert len(set(run_ids)) == 4
    assert sum("worker done" in o for o in outputs) == 2
    for t in done:
        run = runs.load_run(t.user_attrs["run_id"])
        number = studies.display_number(t.number)  # people count trials from #1
        assert run.status == "completed" and run.name == f"pair #{number}" and "sweep:pair" in run.tags
        status = json.loads((run.path / "status.json").read_text())
        assert status["sweep"] == {"name": "pair", "trial": number, "storage": str(artifacts / "sweeps" / "journal.log")}
        assert t.values[0] == pytest.approx(run.metrics["test_accuracy_tta"])
    code, out, err = run_cli(["sweep", "status", "pair"], capsys)
    assert "pair: 4 of 4 trials (4 complete); best test accuracy tta" in out


# A killed worker's trial, retried through Optuna's heartbeat: tests/test_jobs.py
# (test_a_killed_workers_job_stops_itself_and_the_heartbeat_retries_its_trial).


@pytest.mark.heavy
def test_pruning_stops_a_trial_whose_validation_accuracy_lags(artifacts):
    # epochs of a few seconds: the worker reads each epoch from the run folder and asks the job to
    # stop through it, which takes about a second; a pruned run stops early in its next epoch
    base = preset_config("fast", epochs=3, **{**TINY_CONFIG, "train_subset": 3000}).replace(warmup_epochs=0.5)
    sweep = studies.create(studies.define("prune", ["learning_rate=0.000001..0.5:log"], base, trials=3,
                                          pruner="median", sampler="random"))
    study = optuna.load_study(study_name=sweep.name, storage=open_storage())
    for lr in (0.3, 0.3, 0.000001):  # two good trials set the median; the third barely learns
        study.enqueue_trial({"learning_rate": lr})
    assert worker.run_worker("prune") == 3
    good1, good2, lagging = sorted(trials("prune"), key=lambda t: t.number)
    assert good1.state == good2.state == TrialState.COMPLETE
    # the median pruner (2 trials to start from) judges each epoch's validation accuracy from the first
    assert lagging.state == TrialState.PRUNED and lagging.user_attrs["pruned_at_epoch"] == 1
    assert lagging.intermediate_values[1] < min(good1.intermediate_values[1], good2.intermediate_values[1])
    run = runs.load_run(lagging.user_attrs["run_id"])
    assert run.status == "stopped" and run.epochs_done < 3  # stopped in its next epoch, kept as a run
    assert {1, 2} <= set(good1.intermediate_values)


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_a_failing_trial_is_marked_failed_with_its_reason_and_the_sweep_goes_on(artifacts):
    sweep = studies.create(studies.define("fails", ["data=synthetic,/nonexistent/cifar"],
                                          preset_config("fast", epochs=1, **TINY_CONFIG), trials=2,
                                          pruner="none", sampler="grid"))
    assert worker.run_worker(sweep.name) == 2
    states = {t.params["data"]: t for t in trials("fails")}
    assert states["synthetic"].state == TrialState.COMPLETE
    failed = states["/nonexistent/cifar"]
    assert failed.state == TrialState.FAIL and "nonexistent" in failed.user_attrs["error"]


# --- the queue ---------------------------------------------------------------------------------

@pytest.mark.heavy  # a second process
def test_the_queue_adds_lists_removes_and_survives_a_new_process(artifacts, capsys):
    for name in ("first", "second"):
        code, out, err = run_cli(["queue", "add", "--epochs", "1", "--name", name, *TINY], capsys)
        assert code == 0, err
    code, out, err = run_cli(["queue", "list"], capsys)
    assert "#1: state waiting, name first" in out and "#2: state waiting, name second" in out
    code, out, err = run_cli(["queue", "remove", "1"], capsys)
    assert code == 0
    code, out, err = run_cli(["queue", "remove", "1"], capsys)
    assert code == 1 and "#1 is already removed" in err
    # a new process (what a restarted server is) sees the queue as it was left, and trains it
    done = subprocess.run([sys.executable, "-m", "cifar_core", "queue", "run"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts)}, timeout=240)
    assert done.returncode == 0 and "worker done: 1 trial(s)" in done.stdout, done.stdout + done.stderr
    trained = [r for r in runs.list_runs() if r.name == "second"]
    assert len(trained) == 1 and trained[0].status == "completed" and "queue" in trained[0].tags
    assert not [r for r in runs.list_runs() if r.name == "first"]
    code, out, err = run_cli(["queue", "list"], capsys)
    assert "#2: state complete, name second" in out and "first" not in out


@pytest.mark.skipif(not os.environ.get("CIFAR_TEST_POSTGRES_URL"),
                    reason="set CIFAR_TEST_POSTGRES_URL (CI starts Debian's PostgreSQL and sets it)")
@pytest.mark.slow
def test_a_sweep_on_postgresql_is_shared_through_its_url(artifacts, capsys):
    url = os.environ["CIFAR_TEST_POSTGRES_URL"]
    name = f"pg{os.getpid()}"
    code, out, err = run_cli(["sweep", "create", name, "--trials", "2", "--pruner", "none", "--storage", url,
                              "--space", "dropout=0..0.3", "--epochs", "1", *TINY], capsys)
    assert code == 0, err
    assert name not in studies.names()  # not in the default journal: in the database
    assert worker.run_worker(name, url) == 2
    code, out, err = run_cli(["sweep", "status", name, "--storage", url], capsys)
    assert f"{name}: 2 of 2 trials (2 complete)" in out
