"""The Data page through Streamlit's AppTest on the real page: synthetic data and an image folder
with a planted near-duplicate and a run really trained on it; the augmentation preview runs the
model's own layers; a source that cannot be read is one line."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cifar_core import runs
from job_helpers import start_job
from cifar_core.config import TrainConfig
from cifar_core.data import CLASS_NAMES, get_dataset, make_synthetic
from cifar_core.data.duplicates import DEFAULT_THRESHOLD, nearest_train
from cifar_core.models import build_network
from cifar_core.models.augment import augment_like_training, model_augmentation
from test_pages import open_page, texts, widget

DATA_PAGE = "pages/data.py"


def image_captions(at) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


def metric(at, label_start: str) -> str:
    found = [m for m in at.metric if m.label.startswith(label_start)]
    assert len(found) == 1, [m.label for m in at.metric]
    return found[0].value


def write_folder(root, per_class_train=12, per_class_test=4, plant=True):
    """An image folder of random smooth pictures; test cat #0 is a slightly altered copy of
    training dog #3 (a near-duplicate, and a different label)."""
    rng = np.random.default_rng(0)
    pictures = {}
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        for name in CLASS_NAMES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
                image = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.Resampling.BILINEAR))
                pictures[split, name, i] = image
                Image.fromarray(image).save(folder / f"{i:04d}.png")
    if plant:
        copy = np.clip(pictures["train", "dog", 3].astype(np.float32) * 0.9 + 12, 0, 255).astype(np.uint8)
        Image.fromarray(copy).save(root / "test" / "cat" / "0000.png")
    return root


def test_the_page_counts_samples_and_shows_a_recipes_augmentation_on_synthetic_data(artifacts):
    at = open_page(DATA_PAGE)
    assert not at.exception and not at.error, texts(at.error)
    expected = make_synthetic()  # the page's source: synthetic (the fixture's CIFAR10_DATA)
    counts = at.dataframe[0].value
    assert list(counts["train"]) == np.bincount(expected.y_train, minlength=10).tolist()
    assert list(counts["test"]) == np.bincount(expected.y_test, minlength=10).tolist()
    channels = at.dataframe[1].value
    mean = expected.x_train.reshape(-1, 3).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(channels["mean"], mean, atol=0.01)
    strips = [c for c in image_captions(at) if c.split(":")[0] in CLASS_NAMES]
    assert [c.split(":")[0] for c in strips] == list(CLASS_NAMES)  # a strip per class
    widget(at.selectbox, "Augmentation of").set_value("recipe:fast").run()
    assert not at.exception, at.exception
    assert "augment_flip" in texts(at.caption) and "augment_translate" in texts(at.caption)
    widget(at.selectbox, "Augmentation of").set_value("recipe:assignment").run()
    assert "no augmentation layers" in texts(at.info)


def test_the_preview_runs_the_models_own_layers_in_training_mode():
    x = make_synthetic(64, 8, seed=2).x_train[:16]
    model = build_network(TrainConfig(augment="flip"), x)
    assert [layer.name for layer in model_augmentation(model)] == ["augment_flip"]
    flipped = augment_like_training(model, x, seed=0)
    assert all(np.array_equal(a, b) or np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, x))
    assert any(not np.array_equal(a, b) for a, b in zip(flipped, x)), "training mode flips some"
    model.get_layer("augment_flip").mode = "vertical"  # change the model's layer: the preview follows
    vertical = augment_like_training(model, x, seed=0)
    assert all(np.array_equal(a, b) or np.array_equal(a, b[::-1]) for a, b in zip(vertical, x))
    assert any(not np.array_equal(a, b) for a, b in zip(vertical, x))
    plain = build_network(TrainConfig(augment="none"), x)
    np.testing.assert_array_equal(augment_like_training(plain, x), x)


def test_near_duplicates_and_a_runs_accuracy_without_them_on_an_image_folder(artifacts, tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "images")
    monkeypatch.setenv("CIFAR10_DATA", str(folder))
    data = get_dataset(str(folder))
    planted = nearest_train(data.x_train, data.x_test)
    assert planted.below(DEFAULT_THRESHOLD).sum() == 1  # the page must find exactly this one
    job = start_job(TrainConfig(data=str(folder), epochs=1, batch_size=32))
    assert job.join(180) and job.snapshot().status == "completed", job.snapshot().error

    at = open_page(DATA_PAGE)
    widget(at.button, "Find near-duplicates").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert metric(at, "Test images with a near-duplicate") == "1"
    assert any(c.startswith("test #") and "cat/dog" in c for c in image_captions(at))
    assert metric(at, "With a near-duplicate (1)") in ("0.0%", "100.0%")
    assert metric(at, "Without (39)") != "–"
    widget(at.slider, "Threshold (distance)").set_value(0.0).run()  # the copy is altered: not at distance 0
    assert metric(at, "Test images with a near-duplicate") == "0"
    again = open_page(DATA_PAGE)  # kept for this data: no button the second time
    assert not [b for b in again.button if b.label == "Find near-duplicates"]
    assert metric(again, "Test images with a near-duplicate") == "1"


def test_a_source_that_cannot_be_read_is_one_line(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(tmp_path / "nowhere"))  # the lab was started with a wrong path
    at = open_page(DATA_PAGE)
    assert not at.exception
    assert len(at.error) == 1 and "Cannot read this data source" in at.error[0].value


def test_a_locked_lab_shows_the_data_but_cannot_start_the_search(artifacts, monkeypatch):
    monkeypatch.setenv("CIFAR_LAB_PASSWORD", "secret")
    at = open_page(DATA_PAGE)
    assert not at.exception
    find = widget(at.button, "Find near-duplicates")
    assert find.disabled
    assert runs.list_runs() == []
