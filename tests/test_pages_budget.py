"""The Train page's time budget and machine probe, and Runs' planned-against-actual table,
through Streamlit's AppTest on the real pages (speeds injected as a cached probe where a test
needs a machine; the probe button measures tiny networks for real)."""
from __future__ import annotations

import json

import pytest

from job_helpers import newest_run
from cifar_core.planning import probe as probing, table
from cifar_core.planning.probe import Candidate
from test_pages import open_page, texts, widget
from test_planning import TABLE, TINY, make_probe, save_probe

BUDGET = "Time budget (minutes of training)"


@pytest.fixture
def measured(artifacts, monkeypatch):
    """A cached probe of this machine with bfloat16 worth it, and the test accuracy table."""
    monkeypatch.setattr(table, "ACCURACY", TABLE)
    monkeypatch.setattr(table, "PRECISION_AB", {"airbench": {"float32": 0.8, "bfloat16": 0.8}})
    return save_probe(make_probe(1.0))


def test_a_budget_preset_without_a_probe_asks_to_measure_and_cannot_start(artifacts):
    at = open_page("pages/train.py")
    widget(at.selectbox, "Recipe").set_value("fast").run()
    assert widget(at.number_input, BUDGET).value == 5
    assert "not measured on this machine yet" in texts(at.caption)
    assert "Measure this machine first" in texts(at.warning)
    assert widget(at.button, "Start training").disabled
    assert not widget(at.button, "Measure this machine").disabled


def test_the_probe_button_measures_and_the_plan_appears(artifacts, monkeypatch):
    tiny = [Candidate("airbench", TINY, 32, "float32"), Candidate("airbench", TINY, 32, "bfloat16")]
    monkeypatch.setattr(probing, "candidates", lambda described=None: tiny)  # tiny networks, measured for real
    at = open_page("pages/train.py")
    widget(at.button, "Measure this machine").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert probing.load_probe() is not None and len(probing.load_probe().speeds) == 2
    speeds = at.dataframe[0].value
    assert list(speeds["precision"]) == ["float32", "bfloat16"] and (speeds["images/s"] > 0).all()
    assert widget(at.button, "Measure again")


def test_a_budget_shows_the_plan_and_the_run_records_it(measured, artifacts):
    at = open_page("pages/train.py")
    widget(at.selectbox, "Recipe").set_value("fast").run()
    assert not at.exception
    caption = texts(at.caption)
    assert "Expected here: airbench" in caption and "expected" in caption
    assert "Plan:" in texts(at.success)
    epochs = widget(at.number_input, "Epochs")
    assert epochs.disabled and widget(at.selectbox, "Precision").value == "bfloat16"
    planned_epochs = epochs.value
    widget(at.number_input, BUDGET).set_value(15).run()  # a longer budget: a longer or wider plan
    longer = widget(at.number_input, "Epochs").value
    widths = [widget(at.number_input, f"Width {i}").value for i in (1, 2, 3)]
    assert longer > planned_epochs or widths[0] > 16
    widget(at.number_input, BUDGET).set_value(0.1).run()  # 6 s: nothing fits
    assert "too small for any network here: the smallest possible is about" in texts(at.error)
    assert widget(at.button, "Start training").disabled
    save_probe(make_probe(0.01))  # a slow machine: a minute is a few epochs of 300 images
    widget(at.number_input, "Train images").set_value(300)
    widget(at.number_input, "Test images").set_value(100)
    widget(at.selectbox, "Data source").set_value("synthetic")
    widget(at.number_input, BUDGET).set_value(1.0).run()
    assert "Plan:" in texts(at.success)
    widget(at.button, "Start training").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = newest_run()
    assert job.join(180) and job.snapshot().status == "completed", job.snapshot().error
    recorded = json.loads((job.run_dir / "plan.json").read_text())
    config = json.loads((job.run_dir / "config.json").read_text())
    assert recorded["budget_seconds"] == 60 and recorded["chosen"]["epochs"] == config["epochs"]
    assert config["train_subset"] == 300 and config["preset"] == "fast" and recorded["outcome"]["status"] == "completed"

    runs_page = open_page("pages/runs.py")
    assert "Time budgets: planned against actual" in [h.value for h in runs_page.subheader]
    row = runs_page.dataframe[1].value.iloc[0]
    assert row["budget s"] == 60 and row["epochs"] == config["epochs"] and row["status"] == "completed"
    assert row["actual s"] == pytest.approx(recorded["outcome"]["train_seconds"])


def test_the_assignment_preset_has_no_budget_and_shows_its_bf16_speedup(measured):
    at = open_page("pages/train.py")
    assert "no time budget" in texts(at.caption)
    assert "25 epochs at 300 img/s measured" in texts(at.caption)
    assert widget(at.selectbox, "Precision").value == "float32"
    assert "2.00x as fast" in widget(at.selectbox, "Precision").help
