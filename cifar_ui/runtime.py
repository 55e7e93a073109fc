"""Streamlit runtime behaviour the dashboard must change: keep Keras' global state alone.

After every script run Streamlit calls `keras.backend.clear_session()` (its
`_clean_problem_modules`, meant for apps that build a model per rerun). That resets Keras'
process-wide state: the layer-name counters of a model the background training thread is
building right now (it then fails with "All layers added to a Sequential model should have
unique names"), and TensorFlow's kernel cache in the middle of `fit`. Our models are built only
by the training job and cached per run, so nothing needs that clean-up.
"""
from __future__ import annotations

import contextlib
import sys


def keep_keras_session() -> bool:
    """Replace Streamlit's post-run clean-up with one that leaves Keras alone; True if patched."""
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:
        return False
    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None:
        return False  # a newer Streamlit without the hook: nothing to undo
    if getattr(current, "keeps_keras", False):
        return True

    def clean_problem_modules_but_keras() -> None:
        plt = sys.modules.get("matplotlib.pyplot")  # the other half of Streamlit's clean-up
        if plt is not None:
            with contextlib.suppress(Exception):
                plt.close("all")

    clean_problem_modules_but_keras.keeps_keras = True  # type: ignore[attr-defined]
    script_runner._clean_problem_modules = clean_problem_modules_but_keras
    return True


def start_runner() -> bool:
    """Start this server's queue and sweep runner once a page is served (not under AppTest or a
    script, where nothing should train behind the test's back); True when it runs."""
    from streamlit.runtime import Runtime

    # AppTest installs a MagicMock(spec=Runtime) as the instance while a script runs, so
    # Runtime.exists() alone is true under tests too; only a real server's instance is a Runtime
    if not Runtime.exists() or type(Runtime.instance()) is not Runtime:
        return False
    from cifar_core.sweeps.runner import runner

    runner().start()
    return True
