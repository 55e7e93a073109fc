"""Tests for cifar_core.charts: each figure builder on small hand-made data."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar_core import charts
from cifar_core.data import CLASS_NAMES, NUM_CLASSES

HISTORY = {
    "loss": [2.0, 1.5, 1.2],
    "accuracy": [0.3, 0.5, 0.6],
    "val_loss": [1.8, float("nan"), 1.3],
    "val_accuracy": [0.35, 0.45, 0.55],
}


def _has_note(fig) -> bool:
    return bool(fig.layout.annotations)


@pytest.mark.parametrize("metric, title", [("loss", "Loss over Epochs"), ("accuracy", "Accuracy over Epochs")])
def test_epoch_curves_show_training_and_validation(metric, title):
    fig = charts.epoch_curves(HISTORY, metric)
    assert fig.layout.title.text == title
    assert [t.name for t in fig.data] == ["training", "validation"]
    assert list(fig.data[0].x) == [1, 2, 3]
    assert list(fig.data[0].y) == HISTORY[metric]
    assert fig.layout.uirevision == f"{metric}-epoch"  # live redraws keep the user's zoom
    assert not _has_note(fig)


def test_epoch_curves_leave_a_gap_for_nan():
    fig = charts.epoch_curves(HISTORY, "loss")
    assert list(fig.data[1].y) == [1.8, None, 1.3]


def test_epoch_curves_accuracy_axis_is_percent():
    assert charts.epoch_curves(HISTORY, "accuracy").layout.yaxis.tickformat == ".0%"


def test_epoch_curves_without_epochs_say_so():
    fig = charts.epoch_curves({}, "loss")
    assert not fig.data
    assert "No completed epoch" in fig.layout.annotations[0].text


def test_epoch_curves_refuse_an_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        charts.epoch_curves(HISTORY, "precision")


def test_overlay_gives_each_run_one_colour_and_both_curves():
    other = {k: [v * 0.9 for v in vals] for k, vals in HISTORY.items()}
    fig = charts.overlay_curves({"run-a": HISTORY, "run-b": other}, "accuracy")
    assert fig.layout.title.text == "Accuracy over Epochs"
    assert len(fig.data) == 4
    by_run = {}
    for trace in fig.data:
        by_run.setdefault(trace.legendgroup, set()).add(trace.line.color)
    assert set(by_run) == {"run-a", "run-b"}
    assert all(len(colours) == 1 for colours in by_run.values())
    assert by_run["run-a"] != by_run["run-b"]
    assert {t.line.dash for t in fig.data} == {"solid", "dot"}


def test_overlay_of_nothing_says_what_to_do():
    fig = charts.overlay_curves({}, "loss")
    assert not fig.data and "Choose runs" in fig.layout.annotations[0].text


def test_batch_curves_put_accuracy_on_the_right_axis_raw_faint_under_the_smoothed_line():
    fig = charts.batch_curves([0.25, 0.5, 0.75], [2.3, 2.0, 1.8], [0.1, 0.2, 0.3])
    raw_loss, loss, raw_acc, acc = fig.data
    assert (loss.name, acc.name) == ("loss", "accuracy")
    assert loss.yaxis == raw_loss.yaxis == "y" and acc.yaxis == raw_acc.yaxis == "y2"
    assert list(raw_acc.y) == [0.1, 0.2, 0.3] and raw_acc.opacity < 1 and not raw_acc.showlegend
    assert list(acc.x) == [0.25, 0.5, 0.75]
    assert fig.layout.yaxis2.tickformat == ".0%"


def test_batch_curves_are_one_series_across_epochs_and_smoothing_zero_is_the_raw_values():
    fig = charts.batch_curves([0.5, 1.0, 1.5, 2.0], [2.0, 1.5, 1.0, 0.8], [0.1, 0.3, 0.5, 0.6], smoothing=0)
    loss, acc = fig.data
    assert list(loss.x) == [0.5, 1.0, 1.5, 2.0] and None not in list(loss.y)  # no break at the epoch
    assert list(loss.y) == [2.0, 1.5, 1.0, 0.8] and list(acc.y) == [0.1, 0.3, 0.5, 0.6]


def test_smoothing_is_tensorboards_debiased_moving_average():
    assert charts.smooth([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])  # no pull towards zero
    w = 0.6
    first, second = 1.0, (w * (1 - w) * 1.0 + (1 - w) * 3.0) / (1 - w ** 2)
    assert charts.smooth([1.0, 3.0], w) == pytest.approx([first, second])
    assert charts.smooth([1.0, float("nan"), 3.0], w)[1] is None  # a NaN batch is a gap
    assert charts.smooth([1.0, 3.0], 0.0) == [1.0, 3.0]
    with pytest.raises(ValueError):
        charts.smooth([1.0], 1.0)


def test_a_batchs_own_value_is_recovered_from_keras_running_means():
    from cifar_core.training.progress import batch_values

    losses = [2.0, 1.0, 3.0, 0.5]  # each batch's own loss; Keras reports the running mean
    means, previous, recovered = [], (0.0,), []
    for b, _ in enumerate(losses):
        mean = (sum(losses[:b + 1]) / (b + 1),)
        recovered.append(batch_values(b, mean, previous)[0])
        previous = mean
    assert recovered == pytest.approx(losses)


def test_batch_curves_before_the_first_batch():
    fig = charts.batch_curves([], [], [])
    assert not fig.data and "Waiting" in fig.layout.annotations[0].text


def test_confusion_heatmap_counts_in_cells_row_shares_in_colour():
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    cm[0, 0], cm[0, 1], cm[1, 1] = 3, 1, 5  # class 2.. have no images: their rows stay 0
    fig = charts.confusion_heatmap(cm)
    heat = fig.data[0]
    assert list(heat.x) == list(CLASS_NAMES) and list(heat.y) == list(CLASS_NAMES)
    z = np.asarray(heat.z)
    assert z[0, 0] == pytest.approx(0.75) and z[0, 1] == pytest.approx(0.25) and z[1, 1] == 1.0
    assert not np.isnan(z).any() and z[2:].sum() == 0
    assert np.asarray(heat.text)[0, 0] == 3
    assert fig.layout.yaxis.autorange == "reversed"  # airplane on top, as the table reads


def test_confusion_heatmap_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match="10x10"):
        charts.confusion_heatmap(np.zeros((3, 3)))


def test_top_k_bars_keep_the_order_given():
    fig = charts.top_k_bars([("cat", 0.7), ("dog", 0.2), ("frog", 0.05)], title="Top 3")
    bars = fig.data[0]
    assert list(bars.y) == ["cat", "dog", "frog"]
    assert list(bars.text) == ["70.0%", "20.0%", "5.0%"]
    assert fig.layout.title.text == "Top 3"
    assert tuple(fig.layout.xaxis.range) == (0, 1)


def test_probability_bars_mark_the_true_class():
    probs = np.full(NUM_CLASSES, 0.1)
    fig = charts.probability_bars(probs, true_label=3)
    colours = list(fig.data[0].marker.color)
    assert colours[3] == charts.HIGHLIGHT_COLOR
    assert colours.count(charts.HIGHLIGHT_COLOR) == 1
    assert math.isclose(sum(fig.data[0].x), 1.0)


def test_probability_bars_refuse_the_wrong_number_of_classes():
    with pytest.raises(ValueError, match="one per class"):
        charts.probability_bars([0.5, 0.5])


def test_charts_import_neither_streamlit_nor_tensorflow():
    code = ("import sys, cifar_core.charts; "
            "print(sorted(m for m in ('streamlit', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


def test_curves_against_training_minutes():
    history = {"loss": [2.0, 1.5], "val_loss": [1.8, 1.4], "accuracy": [0.3, 0.5], "val_accuracy": [0.35, 0.55],
               "train_seconds": [90.0, 180.0]}
    fig = charts.epoch_curves(history, "accuracy", x="minutes")
    assert fig.layout.title.text == "Accuracy over training time"
    assert list(fig.data[1].x) == [1.5, 3.0] and list(fig.data[1].y) == [0.35, 0.55]
    assert fig.layout.xaxis.title.text == "Training minutes"
    old = {k: v for k, v in history.items() if k != "train_seconds"}  # a run from before the timing
    assert not charts.epoch_curves(old, "accuracy", x="minutes").data
    overlay = charts.overlay_curves({"new": history, "old": old}, "accuracy", x="minutes")
    assert {t.legendgroup for t in overlay.data} == {"new"}
    with pytest.raises(ValueError, match="x must be"):
        charts.epoch_curves(history, "loss", x="hours")


def test_time_to_accuracy_bars_one_group_per_threshold():
    rows = [{"run": "a", "70%": 2.0, "80%": 3.0, "90%": None}, {"run": "b", "70%": 1.0, "80%": None, "90%": None}]
    fig = charts.time_to_accuracy_bars(rows, (0.7, 0.8, 0.9))
    assert [t.name for t in fig.data] == ["to 70%", "to 80%", "to 90%"]
    assert list(fig.data[0].y) == [2.0, 1.0] and list(fig.data[1].y) == [3.0, None]


# --- epoch axes count whole epochs (issue 26: a 2-epoch run showed 1.2, 1.4...) -------------

TWO_EPOCHS = {"loss": [2.0, 1.2], "accuracy": [0.3, 0.6], "val_loss": [1.8, 1.0], "val_accuracy": [0.4, 0.7],
              "train_seconds": [3.0, 6.0]}


def _epoch_ticks(axis) -> tuple:
    return axis.tickmode, axis.tick0, axis.dtick, axis.tickformat


@pytest.mark.parametrize("build", [
    lambda: charts.epoch_curves(TWO_EPOCHS, "loss"),
    lambda: charts.epoch_curves(TWO_EPOCHS, "accuracy"),
    lambda: charts.overlay_curves({"a": TWO_EPOCHS, "b": {**TWO_EPOCHS, "loss": [2.0]}}, "loss"),
    lambda: charts.overlay_curves({"a": TWO_EPOCHS}, "accuracy"),
], ids=["epoch-loss", "epoch-accuracy", "overlay-loss", "overlay-accuracy"])
def test_epoch_axes_of_a_two_epoch_run_tick_each_whole_epoch(build):
    assert _epoch_ticks(build().layout.xaxis) == ("linear", 1, 1, "d")


def test_the_per_class_lines_tick_whole_epochs():
    from cifar_core.charts.insight import class_accuracy_lines

    fig = class_accuracy_lines([1, 2], np.full((2, NUM_CLASSES), 0.5))
    assert _epoch_ticks(fig.layout.xaxis) == ("linear", 1, 1, "d")


def test_a_long_run_keeps_about_ten_whole_epoch_ticks():
    long = {k: [0.5] * 25 for k in ("loss", "val_loss")}
    assert _epoch_ticks(charts.epoch_curves(long, "loss").layout.xaxis) == ("linear", 1, 3, "d")
    assert charts.overlay_curves({"a": long, "b": TWO_EPOCHS}, "loss").layout.xaxis.dtick == 3  # the longest run


def test_the_minutes_axis_is_left_to_plotly():
    fig = charts.overlay_curves({"a": TWO_EPOCHS}, "loss", x="minutes")
    assert fig.layout.xaxis.dtick is None and fig.layout.xaxis.tickformat is None


def test_a_long_probability_title_wraps_for_a_narrow_column():
    title = "Probabilities, calibrated probability (true class in red)"
    fig = charts.probability_bars(np.full(NUM_CLASSES, 0.1), title=title)
    lines = fig.layout.title.text.split("<br>")
    assert " ".join(lines) == title and all(len(line) <= charts.NARROW_TITLE_CHARS for line in lines)
    assert fig.layout.margin.t >= 20 * len(lines) + 30  # room above the bars for every line
    assert charts.probability_bars(np.full(NUM_CLASSES, 0.1), title="Short").layout.title.text == "Short"
