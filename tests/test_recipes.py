"""Training recipes: presets through the real job, schedules, augmentation, TTA, saved models of
every architecture, resume of the optimizer and schedule, and time to accuracy."""
import json

import numpy as np
import pytest

from cifar_core.insight import evaluation
from cifar_core.recipes import presets
from cifar_core import recipes as recipe, runs
from cifar_core.cli import build_parser, config_from_args
from cifar_core.config import ARCHITECTURES, TrainConfig
from cifar_core.data import make_synthetic
from cifar_core.models import build_model, build_network, register_custom_objects
from job_helpers import resume_job, start_job

SMALL = dict(data="synthetic", train_subset=None, test_subset=None)


def small_preset(name: str, **extra) -> TrainConfig:
    """The preset's recipe at a size that trains in seconds (widths shrunk, one short epoch)."""
    base = presets.preset_config(name)
    shrink = dict(widths=(8, 16, 16)) if base.architecture == "airbench" else {}
    return presets.preset_config(name, epochs=1, batch_size=64,
                                 warmup_epochs=min(base.warmup_epochs, 0.25), **shrink, **SMALL, **extra)


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_each_preset_trains_one_short_epoch_through_the_real_job(artifacts, tiny_data, name):
    config = small_preset(name)
    job = start_job(config, dataset=tiny_data)
    assert job.join(240)
    snap = job.snapshot()
    assert snap.status == "completed", snap.error
    run = runs.load_run(snap.run_id)
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["preset"] == name and run.config == config  # the full resolved recipe is recorded
    assert run.history["train_seconds"][0] > 0
    assert 0.0 <= run.metrics["test_accuracy"] <= 1.0
    if config.tta != "none":
        assert run.metrics["tta"] == config.tta and 0.0 <= run.metrics["test_accuracy_tta"] <= 1.0
    else:
        assert "test_accuracy_tta" not in run.metrics


def test_assignment_preset_is_the_assignment():
    config = presets.preset_config("assignment")
    assert config == TrainConfig(preset="assignment")
    assert (config.epochs, config.batch_size, config.seed, config.optimizer, config.learning_rate) == \
        (25, 64, 7, "adam", 0.001)
    model = build_model(config)
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)  # constant, no schedule


def test_presets_fill_every_field_and_stay_editable():
    fast = presets.preset_config("fast", epochs=2, learning_rate=0.1)
    assert fast.preset == "fast" and fast.epochs == 2 and fast.learning_rate == 0.1
    assert fast.architecture == "airbench" and fast.optimizer == "sgd" and fast.tta == "flip_shift"
    assert presets.matching_preset(presets.preset_config("best")) == "best"
    assert presets.matching_preset(fast) == "custom"
    with pytest.raises(ValueError, match="unknown preset"):
        presets.preset_config("fastest")


def test_cli_preset_options_override_the_preset():
    args = build_parser().parse_args(["train", "--preset", "fast", "--epochs", "8", "--widths", "8,16,32",
                                      "--tta", "flip", "--data", "synthetic"])
    config = config_from_args(args)
    assert config.preset == "fast" and config.widths == (8, 16, 32) and config.tta == "flip"
    # only the length changed: the warm-up keeps its share of the schedule (airbench: 23%)
    assert config.warmup_epochs == pytest.approx(0.23 * 8)
    plain = config_from_args(build_parser().parse_args(["train"]))
    assert plain == TrainConfig(preset="assignment")


def test_config_refuses_bad_recipe_values_naming_the_field():
    for bad, field in ((dict(architecture="resnet"), "architecture"), (dict(optimizer="rmsprop"), "optimizer"),
                       (dict(widths=(8, 16)), "widths"), (dict(label_smoothing=0.9), "label_smoothing"),
                       (dict(tta="rotate"), "tta"), (dict(warmup_epochs=30.0), "warmup_epochs")):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**bad)
    assert TrainConfig.from_dict(json.loads(TrainConfig(widths=(8, 16, 32)).to_json())).widths == (8, 16, 32)


@pytest.mark.parametrize("kind,step,expected", [
    ("onecycle", 0, 0.2), ("onecycle", 23, 1.0), ("onecycle", 100, 0.07), ("onecycle", 61.5, 0.535),
    ("cosine", 23, 1.0), ("cosine", 61.5, 0.535), ("cosine", 100, 0.07),
    ("constant", 10, 0.2 + 0.8 * 10 / 23), ("constant", 80, 1.0),
])
def test_schedule_learning_rates_at_chosen_steps(kind, step, expected):
    """10 epochs of 10 steps, peak 1.0, warm-up 2.3 epochs from 0.2, ending at 0.07."""
    config = TrainConfig(epochs=10, learning_rate=1.0, lr_schedule=kind, warmup_epochs=2.3,
                         lr_start_factor=0.2, lr_end_factor=0.07)
    keras_schedule = recipe.make_schedule(config, 10)
    assert float(keras_schedule(step)) == pytest.approx(expected, abs=1e-5)


def test_augmentation_is_active_in_training_only():
    config = TrainConfig(architecture="airbench", widths=(8, 8, 8), augment="flip_translate")
    model = build_network(config, make_synthetic(64, 8).x_train)
    x = make_synthetic(16, 8, seed=3).x_train.astype("float32")
    first, again = np.asarray(model(x, training=False)), np.asarray(model(x, training=False))
    np.testing.assert_array_equal(first, again)
    # the same weights without the augmentation layers give the same inference output
    plain = build_network(config.replace(augment="none"), None)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(plain(x, training=False)), first, rtol=1e-5, atol=1e-6)
    augmented = model.get_layer("augment_flip")(x, training=True)
    assert not np.array_equal(np.asarray(augmented), x)  # and the layers do change images in training


def test_tta_prediction_is_the_mean_over_the_augmented_copies():
    images = make_synthetic(8, 4, seed=5).x_train

    def predict(x):  # any deterministic function of the pixels stands in for a model
        feats = x.reshape(len(x), -1).astype(np.float64)[:, :10] + np.arange(10)
        return feats / feats.sum(axis=1, keepdims=True)

    views = recipe.tta_views(images, "flip_shift")
    assert len(views) == 6 and all(v.shape == images.shape for v in views)
    np.testing.assert_array_equal(views[1], images[:, :, ::-1])
    np.testing.assert_array_equal(views[2][:, 1:, 1:], images[:, :-1, :-1])  # shifted down-right by one
    expected = np.mean([predict(v) for v in views], axis=0)
    np.testing.assert_allclose(recipe.predict_tta(predict, images, "flip_shift"), expected)
    np.testing.assert_allclose(recipe.predict_tta(predict, images, "flip"),
                               (predict(images) + predict(images[:, :, ::-1])) / 2)
    np.testing.assert_allclose(recipe.predict_tta(predict, images, "none"), predict(images))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_saved_model_of_each_architecture_loads_in_safe_mode_and_predicts_the_same(tmp_path, architecture):
    import keras

    data = make_synthetic(128, 16, seed=4)
    config = TrainConfig(architecture=architecture, widths=(8, 8, 16), optimizer="sgd", lr_schedule="onecycle",
                         warmup_epochs=0.5, epochs=2, augment="flip_translate", batch_size=32)
    model = build_model(config, x_train=data.x_train, steps_per_epoch=4)
    y = keras.utils.to_categorical(data.y_train, 10)
    model.fit(data.x_train.astype("float32"), y, epochs=1, batch_size=32, verbose=0)
    before = model.predict(data.x_test, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    register_custom_objects()
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(data.x_test, verbose=0), before, rtol=1e-5, atol=1e-6)
    assert int(loaded.optimizer.iterations) == 4  # the optimizer's state came with it


def test_whitening_kernel_whitens_patches():
    from cifar_core.models.layers import whitening_kernel

    rng = np.random.default_rng(0)
    # correlated 2x2x3 patches: each pixel leaks into its lower-right neighbour
    images = rng.normal(size=(200, 9, 9, 3))
    images[:, 1:, 1:] += 0.8 * images[:, :-1, :-1]
    kernel = whitening_kernel(images, patch_size=2, eps=0.0)
    assert kernel.shape == (2, 2, 3, 24)
    patches = np.lib.stride_tricks.sliding_window_view(images, (2, 2), axis=(1, 2))
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    out = patches @ kernel.reshape(12, 24)[:, :12]
    np.testing.assert_allclose(np.cov(out.T, bias=True), np.eye(12), atol=0.05)
    assert np.abs(np.cov(patches.T, bias=True) - np.diag(np.diag(np.cov(patches.T)))).max() > 0.3  # was not white


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_resume_continues_the_optimizer_and_schedule(artifacts):
    """A run stopped during epoch 2 and resumed continues from epoch 1's checkpoint with its
    optimizer state and schedule step, and ends close to an uninterrupted run."""
    import time

    import keras

    data = make_synthetic(640, 160, seed=6)
    config = TrainConfig(architecture="airbench", widths=(8, 16, 16), epochs=3, batch_size=64, optimizer="sgd",
                         momentum=0.85, learning_rate=0.2, lr_schedule="onecycle", warmup_epochs=0.5,
                         weight_averaging="lookahead", label_smoothing=0.2, augment="flip", data="synthetic")
    whole = start_job(config, dataset=data)
    assert whole.join(240) and whole.snapshot().status == "completed", whole.snapshot().error
    uninterrupted = runs.load_run(whole.run_id).history

    job = start_job(config, dataset=data)
    deadline = time.monotonic() + 240
    while runs.load_run(job.run_id).epochs_done < 1 or not (job.run_dir / "checkpoint.keras").exists():
        assert time.monotonic() < deadline and job.is_alive, "epoch 1 never completed"
        time.sleep(0.01)
    job.stop()
    assert job.join(240) and job.snapshot().status in ("stopped", "completed")
    stopped = runs.load_run(job.run_id)
    if stopped.epochs_done == 3:
        pytest.skip("the job finished before the stop landed (a very fast machine)")
    register_custom_objects()
    checkpoint = keras.saving.load_model(job.run_dir / "checkpoint.keras", safe_mode=True)
    done = stopped.epochs_done
    assert int(checkpoint.optimizer.iterations) == done * 10  # 640 / 64 steps per epoch
    resumed_job = resume_job(job.run_id, dataset=data)
    assert resumed_job.join(240) and resumed_job.snapshot().status == "completed", resumed_job.snapshot().error
    resumed = runs.load_run(job.run_id)
    assert len(resumed.history["loss"]) == 3
    seconds = resumed.history["train_seconds"]  # training time continues the count
    assert seconds[0] < seconds[1] < seconds[2]
    final = keras.saving.load_model(resumed.model_path, safe_mode=True)
    assert int(final.optimizer.iterations) == 30  # no step repeated or lost
    assert float(final.optimizer.learning_rate) == pytest.approx(
        float(recipe.make_schedule(config, 10)(30)), rel=1e-4)  # the schedule ended where it should
    assert resumed.history["val_accuracy"][-1] == pytest.approx(uninterrupted["val_accuracy"][-1], abs=0.1)
    assert resumed.history["loss"][-1] == pytest.approx(uninterrupted["loss"][-1], rel=0.25)


def test_time_to_accuracy_reads_training_minutes():
    history = {"val_accuracy": [0.5, 0.72, 0.81, 0.79], "train_seconds": [60.0, 120.0, 180.0, 240.0]}
    assert evaluation.time_to_accuracy(history, 0.7) == 2.0
    assert evaluation.time_to_accuracy(history, 0.8) == 3.0
    assert evaluation.time_to_accuracy(history, 0.9) is None
    table = evaluation.time_to_accuracy_table({"a": history, "old": {"val_accuracy": [0.9]}})
    assert table == [{"run": "a", "70%": 2.0, "80%": 3.0, "90%": None, "best accuracy": 0.81,
                      "training minutes": 4.0}]


@pytest.mark.slow
@pytest.mark.heavy
def test_early_stopping_ends_with_the_best_epochs_weights(artifacts):
    """EarlyStopping on val_accuracy (mode stated, so every training path can use it) restores the
    best epoch at the end: the final model scores exactly that epoch's validation accuracy."""
    config = TrainConfig(epochs=4, early_stopping_patience=1, data="synthetic", train_subset=300, test_subset=100,
                         batch_size=32)
    job = start_job(config)
    assert job.join(240)
    snap = job.snapshot()
    assert snap.status == "completed", snap.error
    val = snap.history["val_accuracy"]
    assert 1 <= len(val) <= 4
    assert snap.metrics["test_accuracy"] == pytest.approx(max(val), abs=1e-6)


def _stop_at(at_epoch: int, at_batch=None):
    """A caller's callback asking the running job to stop at that batch's end, or that epoch's end
    (it runs after the lab's own: the epoch's checkpoint and lookahead's slow weights are saved first)."""
    import keras

    class StopAt(keras.callbacks.Callback):
        job = None  # the job it stops, set once the job is made (start_job's on_created)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if at_batch is not None and (self.epoch, batch) == (at_epoch, at_batch):
                self.job.stop()

        def on_epoch_end(self, epoch, logs=None):
            if at_batch is None and epoch == at_epoch:
                self.job.stop()

    return StopAt()


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_a_stopped_ema_run_saves_and_scores_the_averaged_weights(artifacts, tiny_data):
    """Keras swaps the EMA weights in as fit ends; a Stop leaves fit before that, so the job does it."""
    import keras

    config = TrainConfig(epochs=3, weight_averaging="ema", batch_size=32, data="synthetic")
    stopper = _stop_at(1, 4)
    job = start_job(config, dataset=tiny_data, callbacks=[stopper], on_created=lambda j: setattr(stopper, "job", j))
    assert job.join(240) and job.snapshot().status == "stopped", job.snapshot().error
    register_custom_objects()
    saved = keras.saving.load_model(job.run_dir / "model.keras", safe_mode=True)  # with its optimizer's averages
    weights = [np.array(w) for w in saved.trainable_weights]
    saved.optimizer.finalize_variable_values(saved.trainable_weights)  # what a completed fit would do last
    for before, after in zip(weights, saved.trainable_weights):
        np.testing.assert_array_equal(before, np.array(after))  # already the averaged weights
    checkpoint = keras.saving.load_model(job.run_dir / "checkpoint.keras", safe_mode=True)  # epoch 1: raw weights
    raw = [np.array(w) for w in checkpoint.trainable_weights]
    checkpoint.optimizer.finalize_variable_values(checkpoint.trainable_weights)
    assert any(not np.allclose(r, np.array(a)) for r, a in zip(raw, checkpoint.trainable_weights))  # EMA != raw
    # the reported metrics are those of the averaged weights
    cached = evaluation.load_cached_predictions(job.run_id)
    np.testing.assert_allclose(cached.probabilities, evaluation.predict_test_set(saved, tiny_data.x_test), atol=1e-5)
    assert runs.load_run(job.run_id).metrics["test_accuracy"] == cached.accuracy


def _slow_weights_probe(job_ref: dict, seen: dict):
    """A caller's callback that records the slow weights lookahead starts the fit with, then stops it."""
    import keras

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            job = job_ref["job"]
            (lookahead,) = [c for c in job.fit_callbacks if hasattr(c, "slow")]
            seen.update(slow=[s.copy() for s in lookahead.slow], restored=lookahead.restored)
            job.stop()

    return Probe()


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_a_resumed_lookahead_run_starts_from_the_slow_weights_saved_with_its_checkpoint(artifacts):
    import keras

    data = make_synthetic(624, 100, seed=3)  # 13 steps of 48: epoch 1 ends 3 steps after a lookahead step
    config = TrainConfig(architecture="airbench", widths=(8, 16, 16), epochs=3, batch_size=48, optimizer="sgd",
                         learning_rate=0.2, weight_averaging="lookahead", data="synthetic")
    stopper = _stop_at(0)
    job = start_job(config, dataset=data, callbacks=[stopper], on_created=lambda j: setattr(stopper, "job", j))
    assert job.join(240) and job.snapshot().status == "stopped", job.snapshot().error
    with np.load(job.run_dir / recipe.LOOKAHEAD_FILE, allow_pickle=False) as f:
        step, saved = int(f["step"]), [f[f"slow_{i}"] for i in range(len(f.files) - 1)]
    register_custom_objects()
    checkpoint = keras.saving.load_model(job.run_dir / "checkpoint.keras", safe_mode=True)
    fast = [np.array(w) for w in checkpoint.weights]
    assert step == int(checkpoint.optimizer.iterations) == 13 and len(saved) == len(fast)
    assert any(not np.array_equal(s, w) for s, w in zip(saved, fast))  # slow is not the checkpoint's weights

    def resume() -> dict:
        ref, seen = {}, {}
        # read by the trainer when it builds fit's callbacks, after loading data and the checkpoint
        resumed = resume_job(job.run_id, dataset=data, on_created=lambda j: (
            ref.update(job=j), j.extra_callbacks.append(_slow_weights_probe(ref, seen))))
        assert resumed.join(240) and resumed.snapshot().status == "stopped", resumed.snapshot().error
        assert seen, "the probe never ran: the trainer built its callbacks before the test added it"
        return seen

    seen = resume()
    assert seen["restored"]
    for mine, theirs in zip(seen["slow"], saved):
        np.testing.assert_array_equal(mine, theirs)
    (job.run_dir / recipe.LOOKAHEAD_FILE).unlink()  # a run from before slow weights were saved
    seen = resume()
    assert not seen["restored"]
    for mine, theirs in zip(seen["slow"], fast):
        np.testing.assert_array_equal(mine, theirs)  # slow starts as the fast weights, as it always did


def test_a_label_smoothing_runs_test_loss_is_its_val_loss_wherever_it_is_measured(artifacts):
    import io

    from cifar_core import cli

    config = TrainConfig(epochs=1, label_smoothing=0.2, data="synthetic", train_subset=600, test_subset=200,
                         batch_size=32)
    job = start_job(config)
    assert job.join(180) and job.snapshot().status == "completed", job.snapshot().error
    run = runs.load_run(job.run_id)
    val_loss = run.history["val_loss"][-1]
    assert run.metrics["test_loss"] == pytest.approx(val_loss, rel=1e-6)  # the trainer's: same weights, same loss
    out = io.StringIO()
    assert cli.main(["evaluate", job.run_id], out=out) == 0  # predicted again from the saved file
    assert runs.load_run(job.run_id).metrics["test_loss"] == pytest.approx(val_loss, rel=1e-4)
    assert "label smoothing 0.2" in out.getvalue()
