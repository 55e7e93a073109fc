"""A finished sweep on the real images, in numbers: every trial (parameters, accuracy, training
seconds), the best trial, the Pareto front of accuracy against training seconds, and the sweep
machinery's overhead per trial: the trial's wall time in Optuna (start to tell) minus its run's
own wall time (status.json: started to finished), as a share of the trial's wall time.

    CIFAR_ARTIFACTS_DIR=/tmp/sweep-art python bench/sweep_report.py NAME [--storage URL]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--storage", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import optuna
    from optuna.trial import TrialState

    from cifar_core import runs
    from cifar_core.sweeps import studies

    sweep, study = studies.load(args.name, args.storage)
    head = C.evidence(f"sweep {args.name}: trials, Pareto front, overhead", str(sweep.base.data))
    rows, previous_end = [], None
    finished = sorted(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)),
                      key=lambda t: t.datetime_start or t.datetime_complete)
    for t in finished:
        run_id = t.user_attrs.get("run_id")
        row = {"trial": t.number, "state": t.state.name.lower(), **t.params,
               "accuracy": t.values[0] if t.values else None, "train_seconds": t.user_attrs.get("train_seconds")}
        if run_id and t.datetime_complete and t.datetime_start:
            status = json.loads((runs.run_path(run_id) / "status.json").read_text())
            trial_wall = (t.datetime_complete - t.datetime_start).total_seconds()
            run_wall = status["finished_at"] - status["started_at"]
            # the worker's own time between trials (loading the study, looking for dead workers' trials,
            # asking Optuna) counts as overhead too; one worker, so the gap is the previous trial's end
            gap = (t.datetime_start - previous_end).total_seconds() if previous_end else 0.0
            row.update(trial_wall=round(trial_wall, 2), run_wall=round(run_wall, 2), gap_before=round(gap, 2),
                       overhead=round((trial_wall - run_wall + gap) / (trial_wall + gap), 4))
            previous_end = t.datetime_complete
        rows.append(row)
    columns = [(k, k) for k in rows[0] if k not in ("trial",)] if rows else []
    C.print_table(rows, [("trial", "trial"), *columns], title="trials", digits=4)
    done = [r for r in rows if r["state"] == "complete"]
    best = max(done, key=lambda r: r["accuracy"], default=None)
    print(f"best: {json.dumps(best)}")
    if len(sweep.directions) == 2:
        front = sorted(({"trial": t.number, "accuracy": t.values[0], "train_seconds": t.values[1]}
                        for t in study.best_trials), key=lambda r: r["train_seconds"])
        C.print_table(front, [("trial", "trial"), ("accuracy", "accuracy", 4), ("train_seconds", "training s", 1)],
                      title="Pareto front")
    overheads = [r["overhead"] for r in rows if "overhead" in r]
    if overheads:
        print(f"overhead per trial: median {C.median(overheads):.2%}, max {max(overheads):.2%} of the trial's wall time")
    C.save_results("sweep_report", {**head, "rows": rows, "optuna": optuna.__version__}, rows, stem=args.out)


if __name__ == "__main__":
    main()
