"""The Sweeps page's pieces: the trials table, best-so-far against training minutes, Optuna's own
figures, and the forms that create a sweep and manage the queue."""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd
import plotly.graph_objects as go
from cifar_core.sweeps import studies

EXAMPLE_SPACE = "learning_rate=0.2..1.0:log\nlabel_smoothing=0..0.3\nweight_decay=0.002..0.02:log"


def trials_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "finished"} for r in rows])
    return frame.dropna(axis=1, how="all") if not frame.empty else frame


def optuna_figures(sweep: studies.Sweep, study) -> list[tuple[str, Optional[go.Figure], str]]:
    """(title, figure or None, why not) for each of Optuna's figures this sweep can draw."""
    from optuna import visualization as vis

    single = len(sweep.directions) == 1
    target: dict[str, Any] = {} if single else {"target": lambda t: t.values[0], "target_name": "accuracy"}
    wanted = [("Optimization history", lambda: vis.plot_optimization_history(study, **target)),
              ("Parallel coordinates", lambda: vis.plot_parallel_coordinate(study, **target)),
              ("Parameter importances", lambda: vis.plot_param_importances(study, **target)),
              ("Intermediate values (validation accuracy per epoch)", lambda: vis.plot_intermediate_values(study))]
    if not single:
        wanted.append(("Pareto front: accuracy against training seconds", lambda: vis.plot_pareto_front(
            study, target_names=["test accuracy", "training seconds"])))
    out = []
    for title, make in wanted:
        try:
            fig = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few finished trials for it
            out.append((title, None, str(exc).splitlines()[0] if str(exc) else "not enough finished trials yet"))
            continue
        fig.update_layout(title=title, title_x=0)
        out.append((title, fig, ""))
    return out
