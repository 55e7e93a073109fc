"""CIFAR-10 Lab core. Never imports Streamlit; imports TensorFlow only when a model is needed.

Sub-packages, each importing only those listed before it (tests/test_structure.py checks it
against the "May import" line of each one's docstring):

    config, files, paths, quiet   the TrainConfig, the one atomic writer, where artifacts live,
                                  TensorFlow's start-up noise
    data        CIFAR-10 from any source, class names, uploaded images
    recipes     optimizers, schedules, averaging, TTA, and the named presets
    models      the networks
    runs        the run folders: writing, listing, names, liveness
    insight     evaluation, calibration, per-epoch confusion, Grad-CAM, prediction
    planning    the machine probe, time budgets, pacing a budgeted run
    training    the background job, its live state, distribution
    sweeps      Optuna sweeps and the run queue
    charts      Plotly figures of plain data
    export      SavedModel and TFLite exports
    cli         `python -m cifar_core ...`
"""
import os

# TensorFlow's C++ start-up chatter (no CUDA here, CPU feature notes) is noise for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
