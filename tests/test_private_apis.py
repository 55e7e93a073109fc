"""The lab reads three private things of Streamlit and Keras, each behind one adapter. These tests
fail loudly when an upgrade moves them, instead of the lab quietly losing what they give it."""
from __future__ import annotations

import inspect
import sys

import keras
import numpy as np
import pytest

from cifar_core import recipes
from cifar_core.config import TrainConfig
from cifar_core.models import build_network
from cifar_core.models.keras_private import layer_calls, optimizer_schedule
from cifar_core.recipes.schedules import WarmupSchedule


def test_streamlit_still_clears_the_keras_session_after_each_run_and_the_adapter_replaces_it():
    """cifar_ui/runtime.py replaces Streamlit's `_clean_problem_modules`, which calls
    `keras.backend.clear_session()` after every script run (it breaks a model being built by the
    training thread). If Streamlit renames it or stops clearing Keras, this says so."""
    from streamlit.runtime.scriptrunner import script_runner

    from cifar_ui import runtime

    assert runtime.keep_keras_session(), "Streamlit's post-run clean-up hook is gone: check runtime.py"
    patched = script_runner._clean_problem_modules
    assert getattr(patched, "keeps_keras", False)
    source = inspect.getsource(sys.modules[script_runner.__name__])
    assert "def _clean_problem_modules" in source and "clear_session()" in source, \
        "Streamlit no longer clears the Keras session after a run: the adapter may be unneeded"
    assert "_clean_problem_modules()" in source, "Streamlit no longer calls its clean-up hook"


def test_optimizer_schedule_finds_the_compiled_optimizers_schedule():
    config = TrainConfig(lr_schedule="onecycle", warmup_epochs=1, epochs=4, learning_rate=0.01)
    schedule = optimizer_schedule(recipes.make_optimizer(config, steps_per_epoch=10))
    assert isinstance(schedule, WarmupSchedule) and schedule.total_steps == 40
    assert optimizer_schedule(recipes.make_optimizer(TrainConfig(), steps_per_epoch=10)) is None  # a constant rate


@pytest.mark.parametrize("architecture", ["assignment", "assignment_bn", "airbench"])
def test_layer_calls_walks_every_layer_of_each_network_even_after_a_save_and_load(architecture, tmp_path):
    config = TrainConfig(architecture=architecture, **({"widths": (8, 16, 16)} if architecture == "airbench" else {}))
    model = build_network(config, np.zeros((4, 32, 32, 3), np.uint8))
    path = tmp_path / "m.keras"
    model.save(path)
    for m in (model, keras.saving.load_model(path, safe_mode=True)):
        calls = layer_calls(m)
        named = {layer.name for layer in m.layers if not isinstance(layer, keras.layers.InputLayer)}
        assert named <= set(calls), f"layers the walk missed: {sorted(named - set(calls))}"
        last = m.layers[-1].name
        assert calls[last].output is m.outputs[0]
