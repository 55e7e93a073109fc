"""A budgeted run's record: plan.json holds the plan it trained to and, once it ends, the outcome."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from cifar_core.runs import store
from cifar_core.runs.store import PLAN_FILE  # noqa: F401 (re-exported)


def record_outcome(run_dir: Path, status: str, history: dict[str, list[float]],
                   metrics: Optional[dict[str, Any]], pacing: Optional[dict[str, Any]] = None) -> None:
    """Add what happened to a budgeted run's plan.json (nothing for a run without one): training
    seconds against the budget and the plan's prediction, and the accuracy reached. An over- or
    under-run is recorded as it was."""
    path = run_dir / PLAN_FILE
    try:
        recorded = store.read_json(path) if path.is_file() else None
    except (OSError, ValueError, store.RunError):
        return
    if not isinstance(recorded, dict):
        return
    seconds = (history.get("train_seconds") or [0.0])[-1]
    planned = (recorded.get("chosen") or {}).get("predicted_seconds")
    budget = recorded.get("budget_seconds")
    outcome: dict[str, Any] = {
        "status": status, "train_seconds": round(seconds, 1), "epochs": len(history.get("loss", [])),
        "over_budget": round(seconds / budget - 1, 4) if budget else None,
        "over_plan": round(seconds / planned - 1, 4) if planned else None}
    if pacing:  # how the pacer moved the run's end (planning/pacing.py)
        outcome["pacing"] = pacing
    for key in ("test_accuracy", "test_accuracy_tta"):
        if metrics and metrics.get(key) is not None:
            outcome[key] = metrics[key]
    try:
        store.write_json(path, {**recorded, "outcome": outcome})
    except OSError:  # a full disk: history.json and metrics.json still say what happened
        pass


def predicted_against_actual(plan: dict[str, Any]) -> dict[str, Any]:
    """One row for people: budget, what was planned and what happened."""
    chosen, outcome = plan.get("chosen") or {}, plan.get("outcome") or {}
    return {"budget s": plan.get("budget_seconds"), "network": chosen.get("label"),
            "epochs": chosen.get("epochs"), "predicted s": chosen.get("predicted_seconds"),
            "actual s": outcome.get("train_seconds"), "over budget": outcome.get("over_budget"),
            "predicted acc (TTA)": chosen.get("predicted_accuracy_tta"),
            "actual acc (TTA)": outcome.get("test_accuracy_tta", outcome.get("test_accuracy")),
            "status": outcome.get("status", "not ended")}
