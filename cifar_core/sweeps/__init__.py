"""Sweeps and the run queue, on Optuna: the lab searches while you are away.

- `space`: `--space FIELD=SPEC` parsed and checked against TrainConfig before any trial starts.
- `storage`: where studies live: Optuna's journal file under `artifacts/sweeps/` by default, or a
  database URL (PostgreSQL, MySQL) shared by several machines.
- `studies`: creating, reading, stopping sweeps; the queue (a study of enqueued fixed trials).
- `worker`: takes trials one after another and trains each as an ordinary run, with pruning and
  the recovery of trials whose worker died.

May import `cifar_core.config`, `.presets`, `.paths`, `.store`, `.runs` and `.training`; never the
dashboard.

May import: config, files, paths, quiet, trainer_lock, data, recipes, models, runs, insight, planning, training, jobs.
"""
