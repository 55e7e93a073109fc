"""TensorFlow's start-up chatter kept away from CLI users: the C++ runtime writes its absl/oneDNN/
CUDA notices straight to file descriptor 2 while it loads and while it first looks for devices,
where no Python setting reaches them (TF_CPP_MIN_LOG_LEVEL silences only some of them)."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def stderr_to_buffer() -> Iterator[list[str]]:
    """Send fd 2 (C++ and Python alike) to a temporary file while the block runs; the list it
    yields receives what was written, so a failure can still show it."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def load_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras and initialise the devices with their notices swallowed.
    On an import error the swallowed text is printed before the error propagates."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_to_buffer() as captured:
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_logical_devices()  # the CUDA probe ("failed call to cuInit") happens here
        except BaseException:
            failed = True
        else:
            failed = False
    if failed:
        sys.stderr.write("".join(captured))
        import tensorflow  # noqa: F401  (raise the real error, now visibly)
