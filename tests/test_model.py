"""The assignment's network, pinned: layer order, parameter count, output, compile settings."""
import numpy as np
import pytest

from cifar_core.config import TrainConfig
from cifar_core.models import ASSIGNMENT_PARAMS, build_model

EXPECTED_LAYERS = [
    "Rescaling",
    "Conv2D", "Dropout", "Conv2D", "MaxPooling2D",
    "Conv2D", "Dropout", "Conv2D", "MaxPooling2D",
    "Conv2D", "Dropout", "Conv2D", "MaxPooling2D",
    "Flatten", "Dropout", "Dense", "Dropout", "Dense", "Dropout", "Dense",
]


def test_architecture_is_pinned():
    model = build_model(TrainConfig())
    assert [type(layer).__name__ for layer in model.layers] == EXPECTED_LAYERS
    assert ASSIGNMENT_PARAMS == 2_915_114
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == ASSIGNMENT_PARAMS
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and c.activation.__name__ == "relu" for c in convs)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [d.units for d in dense] == [1024, 512, 10]
    assert dense[-1].activation.__name__ == "softmax"
    assert all(d.rate == 0.2 for d in model.layers if type(d).__name__ == "Dropout")


def test_compiled_with_adam_and_categorical_crossentropy():
    model = build_model(TrainConfig(learning_rate=0.0005, dropout=0.3))
    assert type(model.optimizer).__name__ == "Adam"
    assert np.isclose(float(model.optimizer.learning_rate.numpy()), 0.0005)
    assert model.loss == "categorical_crossentropy"
    assert all(d.rate == 0.3 for d in model.layers if type(d).__name__ == "Dropout")


def test_takes_raw_uint8_pixels_and_outputs_probabilities():
    model = build_model(TrainConfig())
    x = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)
    probs = np.asarray(model(x.astype("float32"), training=False))
    assert probs.shape == (3, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Rescaling is inside the model: raw 0..255 values, not pre-scaled ones, are the contract.
    assert np.isclose(model.layers[0].scale, 1 / 255)


@pytest.mark.slow
def test_builds_while_another_thread_clears_the_keras_session():
    """Streamlit calls keras.backend.clear_session() after every rerun, from its own threads."""
    import threading

    import keras

    done = threading.Event()

    def clear_repeatedly():
        while not done.wait(0.005):
            # The name counters are what Streamlit's clear_session() resets under us; its gc.collect()
            # (free_memory) only made each clear take ~0.3 s with TensorFlow loaded, and this test 75 s.
            keras.backend.clear_session(free_memory=False)

    clearer = threading.Thread(target=clear_repeatedly)
    clearer.start()
    try:
        for _ in range(2):
            assert len(build_model(TrainConfig()).layers) == len(EXPECTED_LAYERS)
    finally:
        done.set()
        clearer.join()
