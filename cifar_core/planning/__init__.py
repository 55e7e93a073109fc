"""Sizing recipes to the machine they run on.

- `machine`: which machine this is (CPU model and flags, cores, device, TensorFlow and Keras).
- `probe`: this machine's measured training speed per candidate network, batch and precision,
  cached per machine under `artifacts/probe/`; the precision `auto` resolves from it.
- `table`: test accuracy by network width and epochs, measured on the real images.
- `planner`: the recipe expected to reach the best accuracy within a training-time budget.

May import `cifar_core.config`, `.paths`, `.store`, `.presets` and `.models`; never training,
runs or anything of the dashboard.

May import: config, files, paths, quiet, trainer_lock, data, recipes, models, runs, insight.
"""
