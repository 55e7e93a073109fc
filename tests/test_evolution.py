"""Evolving evaluation (issue 11): the stratified sample, the callback inside real training jobs
(every epoch recorded, the last one reusing the validation pass, inference mode, a resume that
continues the series), the reader's tolerance, the improved/stuck classes, and the pages."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cifar_core.insight import evaluation, evolution
from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.data.labels import NUM_CLASSES
from job_helpers import resume_job, start_job

from streamlit.testing.v1 import AppTest

from test_pages import chart_titles, open_page, raised, texts, widget

PAGE_QUICK = dict(data="synthetic", train_subset=600, test_subset=200, batch_size=32)  # as tests/conftest.py

SAMPLED = 100  # the tests' sample: half of PAGE_QUICK's 200 test images, so a real subsample


def _train(root, monkeypatch_context, **overrides):
    monkeypatch_context.setenv("CIFAR_ARTIFACTS_DIR", str(root))
    monkeypatch_context.setenv("CIFAR10_DATA", "synthetic")
    monkeypatch_context.setattr(evolution, "SAMPLE_SIZE", SAMPLED)
    job = start_job(TrainConfig(**{**PAGE_QUICK, **overrides}))
    assert job.join(240), "a tiny training job took over 240 s"
    assert job.snapshot().status == "completed", job.snapshot().error
    return root / "runs" / job.run_id


@pytest.fixture(scope="module")
def evolved_run(tmp_path_factory):
    """A run really trained for 2 epochs with a 100-image evolution sample."""
    with pytest.MonkeyPatch.context() as mp:
        return _train(tmp_path_factory.mktemp("evolved"), mp, epochs=2)


@pytest.fixture
def with_evolved(artifacts, evolved_run):
    shutil.copytree(evolved_run, artifacts / "runs" / evolved_run.name)
    return evolved_run.name


def _recorded(run_dir):
    return json.loads((run_dir / evolution.EVOLUTION_FILE).read_text())


# --- the sample --------------------------------------------------------------------------

def test_the_sample_keeps_each_class_share_and_is_fixed_by_the_seed():
    labels = np.repeat([0, 1, 2, 3], [500, 300, 150, 50])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    picked = evolution.stratified_sample(labels, 100, seed=7)
    assert len(picked) == 100 and len(set(picked.tolist())) == 100 and (np.diff(picked) > 0).all()
    assert np.bincount(labels[picked]).tolist() == [50, 30, 15, 5]
    assert np.array_equal(picked, evolution.stratified_sample(labels, 100, seed=7))
    assert not np.array_equal(picked, evolution.stratified_sample(labels, 100, seed=8))
    odd = evolution.stratified_sample(labels, 7, seed=1)  # rounding: largest remainders, still 7 in all
    assert len(odd) == 7 and np.bincount(labels[odd], minlength=4).tolist() == [4, 2, 1, 0]
    assert np.array_equal(evolution.stratified_sample(labels, 5000, seed=7), np.arange(len(labels)))


# --- the callback in real jobs -----------------------------------------------------------

def test_a_real_job_records_each_epochs_confusion_on_the_sample(with_evolved, artifacts):
    run_dir = artifacts / "runs" / with_evolved
    raw = _recorded(run_dir)
    run = runs.load_run(with_evolved)
    labels = evaluation.run_test_data(run).y_test
    indices = np.array(raw["indices"])
    assert raw["sample_size"] == SAMPLED == len(indices) and raw["test_images"] == len(labels) == 200
    assert np.array_equal(indices, evolution.stratified_sample(labels, SAMPLED, run.config.seed))
    assert raw["per_class"] == np.bincount(labels[indices], minlength=NUM_CLASSES).tolist()
    assert [e["epoch"] for e in raw["epochs"]] == [1, 2]
    for entry in raw["epochs"]:
        cm = np.array(entry["confusion"])
        assert cm.shape == (NUM_CLASSES, NUM_CLASSES) and cm.sum() == SAMPLED  # the sample size, every epoch
        assert cm.sum(axis=1).tolist() == raw["per_class"]
        assert entry["seconds"] >= 0 and entry["epoch_seconds"] > entry["seconds"]
    # Epoch 1 predicted the sample; the last epoch took the rows of the validation's full-split
    # predictions, which the final evaluation cached: the very same matrix, no second pass.
    assert [e["source"] for e in raw["epochs"]] == ["sample", "validation"]
    preds = evaluation.load_cached_predictions(run)
    expected = evaluation.confusion_matrix(labels[indices], preds.predicted[indices])
    assert np.array_equal(np.array(raw["epochs"][-1]["confusion"]), expected)
    evo = evolution.read_evolution(run_dir)
    assert evo.epochs == (1, 2) and evo.note is None and evo.per_class_accuracy.shape == (2, NUM_CLASSES)
    assert evo.accuracy[-1] == pytest.approx((preds.predicted[indices] == labels[indices]).mean())


def test_the_callback_predicts_in_inference_mode_with_the_epochs_weights(tmp_path):
    # Early stopping turns the validation reuse off, so the callback predicts the sample itself;
    # with one epoch the restored best weights are that epoch's, so the recorded matrix must equal
    # the final model's inference-mode predictions (Dropout active would differ).
    with pytest.MonkeyPatch.context() as mp:
        run_dir = _train(tmp_path, mp, epochs=1, early_stopping_patience=1)
        raw = _recorded(run_dir)
        assert [e["source"] for e in raw["epochs"]] == ["sample"]
        run = runs.load_run(run_dir.name)
        labels = evaluation.run_test_data(run).y_test
        indices = np.array(raw["indices"])
        preds = evaluation.load_cached_predictions(run)
        assert np.array_equal(np.array(raw["epochs"][0]["confusion"]),
                              evaluation.confusion_matrix(labels[indices], preds.predicted[indices]))


def test_a_resume_continues_the_series_and_drops_epochs_being_retrained(with_evolved, artifacts, monkeypatch):
    run_dir = artifacts / "runs" / with_evolved
    raw = _recorded(run_dir)
    ahead = [dict(raw["epochs"][0], epoch=e, source="bogus") for e in (3, 4)]  # as if written past the history
    (run_dir / evolution.EVOLUTION_FILE).write_text(json.dumps({**raw, "epochs": raw["epochs"] + ahead}))
    monkeypatch.setattr(evolution, "SAMPLE_SIZE", SAMPLED)
    job = resume_job(with_evolved, epochs=3)
    assert job.join(240) and job.snapshot().status == "completed", job.snapshot().error
    resumed = _recorded(run_dir)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert resumed["epochs"][:2] == raw["epochs"]  # the first two kept as they were
    assert resumed["epochs"][2]["source"] == "validation" and resumed["indices"] == raw["indices"]
    assert all(np.array(e["confusion"]).sum() == SAMPLED for e in resumed["epochs"])


# --- reading -----------------------------------------------------------------------------

def test_the_reader_tolerates_a_missing_or_damaged_file(tmp_path, evolved_run):
    missing = evolution.read_evolution(tmp_path)
    assert missing.epochs == () and "no per-epoch evaluation" in missing.note
    (tmp_path / evolution.EVOLUTION_FILE).write_text('{"epochs": [{"epoch": 1, "conf')
    damaged = evolution.read_evolution(tmp_path)
    assert damaged.epochs == () and "damaged" in damaged.note
    raw = _recorded(evolved_run)
    bad = dict(raw["epochs"][0], confusion=[[1] * NUM_CLASSES] * NUM_CLASSES)  # rows not the class sizes
    (tmp_path / evolution.EVOLUTION_FILE).write_text(json.dumps({**raw, "epochs": [bad, raw["epochs"][1], "x"]}))
    partly = evolution.read_evolution(tmp_path)
    assert partly.epochs == (2,) and partly.note == "2 damaged epoch record(s) left out."


def _series(per_class_correct: list[list[int]], size: int = 10) -> evolution.Evolution:
    """An Evolution where class k got per_class_correct[epoch][k] of `size` right (the rest as class 9 or 0)."""
    cms = []
    for row in per_class_correct:
        cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        for k, right in enumerate(row):
            cm[k, k] = right
            cm[k, 9 if k != 9 else 0] += size - right
        cms.append(cm)
    return evolution.Evolution(epochs=tuple(range(1, len(cms) + 1)), confusion=np.array(cms),
                               sample_size=size * NUM_CLASSES, test_images=1000)


def test_the_most_improved_and_the_stuck_classes():
    series = _series([[2, 5, 5, 4, 5, 10, 5, 5, 5, 5],
                      [6, 6, 6, 4, 6, 10, 6, 6, 6, 6],
                      [9, 8, 7, 4, 7, 10, 7, 7, 7, 7]])
    progress = evolution.class_progress(series)
    assert [r["class"] for r in progress["improved"]] == ["airplane", "automobile", "bird"]
    assert progress["improved"][0]["gain"] == pytest.approx(0.7)
    assert [r["class"] for r in progress["stuck"]] == ["cat"]  # flat at 40%; the frog at 100% is not stuck
    assert evolution.class_progress(_series([[5] * 10])) == {"improved": [], "stuck": []}


# --- pages -------------------------------------------------------------------------------

def test_evaluate_shows_the_evolution_with_an_epoch_slider(with_evolved):
    at = open_page("pages/evaluate.py")
    assert not at.error, texts(at.error)
    slider = widget(at.select_slider, "Confusion matrix at epoch")
    assert slider.options == ["1", "2"] and slider.value == 2
    titles = chart_titles(at)
    assert f"Confusion matrix at epoch 2 ({SAMPLED} sampled test images)" in titles
    assert "Per-class accuracy over epochs" in titles
    assert "Improved most" in texts(at.markdown) and "Stuck" in texts(at.markdown)
    assert any("fixed sample of 100 of the run's 200 test images" in c.value for c in at.caption)
    slider.set_value(1).run()
    assert not at.exception, raised(at)
    assert f"Confusion matrix at epoch 1 ({SAMPLED} sampled test images)" in chart_titles(at)


def test_evaluate_survives_a_damaged_evolution_file(with_run, artifacts):
    (artifacts / "runs" / with_run / evolution.EVOLUTION_FILE).write_text("not json")
    at = open_page("pages/evaluate.py")
    assert not at.error, texts(at.error)
    assert any("is damaged and was not read" in c.value for c in at.caption)
    assert "Confusion matrix" in chart_titles(at)  # the rest of the page is there



def _live_panel(folder: str) -> None:
    """What the Train page's live panel does: render the series of a run folder as it grows."""
    from pathlib import Path

    from cifar_ui.evolution import render_evolution

    render_evolution(Path(folder), key="live_evolution")


def test_the_epoch_slider_follows_new_epochs_unless_moved_back(tmp_path, evolved_run):
    raw = _recorded(evolved_run)
    path = tmp_path / evolution.EVOLUTION_FILE

    def record(epochs: int) -> None:  # a growing run: epoch k's entry repeats epoch 1's matrix
        entries = raw["epochs"] + [dict(raw["epochs"][0], epoch=e) for e in range(3, epochs + 1)]
        runs.write_json(path, {**raw, "epochs": entries})

    record(2)
    at = AppTest.from_function(_live_panel, args=(str(tmp_path),), default_timeout=60).run()
    assert not at.exception, raised(at)
    slider = widget(at.select_slider, "Confusion matrix at epoch")
    assert slider.value == 2
    slider.set_value(1).run()
    record(3)
    at.run()
    assert widget(at.select_slider, "Confusion matrix at epoch").value == 1  # moved back: it stays
    widget(at.select_slider, "Confusion matrix at epoch").set_value(3).run()
    record(4)
    at.run()
    assert not at.exception, raised(at)
    slider = widget(at.select_slider, "Confusion matrix at epoch")
    assert slider.options == ["1", "2", "3", "4"] and slider.value == 4  # at the newest: it follows
    assert f"Confusion matrix at epoch 4 ({SAMPLED} sampled test images)" in chart_titles(at)


# --- room to read it (issue 26) ------------------------------------------------------------

def test_the_epoch_confusion_matrix_names_every_class_and_has_room():
    """At 1500 px wide, half a column showed every other class name and unreadable numbers."""
    from cifar_core.charts import insight as charts_insight
    from cifar_core.data.labels import CLASS_NAMES

    cm = np.arange(100).reshape(10, 10)
    fig = charts_insight.epoch_confusion(cm, 3, 1000)
    for axis in (fig.layout.xaxis, fig.layout.yaxis):  # every name, whatever the width: no automatic thinning
        assert axis.tickmode == "array" and list(axis.tickvals) == list(CLASS_NAMES), axis
        assert axis.tickfont.size >= 12
    assert fig.layout.height >= 560
    cells = fig.data[0]
    assert cells.texttemplate == "%{text}" and cells.textfont.size >= 13  # readable counts in every cell


def test_the_epoch_confusion_matrix_spans_the_page_not_half_a_column(with_evolved):
    at = open_page("pages/evaluate.py")
    assert not at.exception, raised(at)
    in_columns = [json.loads(c.proto.spec)["layout"]["title"]["text"]
                  for col in at.columns for c in col.get("plotly_chart")]
    assert "Confusion matrix at epoch 2 (100 sampled test images)" in chart_titles(at)
    assert not [t for t in in_columns if t.startswith("Confusion matrix at epoch")], in_columns
