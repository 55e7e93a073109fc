"""The Train page's time budget and machine probe: measure this machine, choose minutes of
training, see the plan (network, epochs, precision, expected time and accuracy, runners-up)."""
from __future__ import annotations

from typing import Optional

import pandas as pd
import streamlit as st

from cifar_core.recipes import presets
from cifar_core.config import TrainConfig
from cifar_core.planning import machine, planner
from cifar_core.planning.probe import Probe, ProbeError, run_probe

from . import access


def measure_button(busy: bool, label: str = "Measure this machine") -> None:
    """A button that runs the probe (about half a minute); refused while a job trains, since the
    job would slow the measurement and the measurement the job."""
    reason = ("A training job is running: it would distort the measurement." if busy
              else access.locked_reason() or "Times a few training steps of every network a plan can choose "
                                                 "(about half a minute) and keeps the result for this machine.")
    if not st.button(label, icon=":material/speed:", disabled=busy or not access.can_act(), help=reason,
                     key=f"cifar_probe_{label}"):
        return
    if busy or not access.can_act():  # checked again: the button's state is only what the browser saw
        return
    bar = st.progress(0.0, text="Measuring this machine")

    def progress(done: int, total: int, text: str) -> None:
        bar.progress(done / total, text=f"Measuring {done + 1}/{total}: {text}")

    try:
        run_probe(on_progress=progress)
    except ProbeError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    finally:
        bar.empty()
    st.rerun()  # the page again, with the speeds and the plans from this measurement


def speeds_frame(probe: Probe) -> pd.DataFrame:
    rows = []
    for s in probe.speeds:
        c = s.candidate
        ratio = probe.speedup(c.architecture, c.widths, c.batch_size, c.precision) if c.precision != "float32" else None
        rows.append({"network": c.label.rsplit(", ", 2)[0], "batch": c.batch_size, "precision": c.precision,
                     "images/s": round(s.images_per_second), "vs float32": f"{ratio:.2f}x" if ratio else ""})
    return pd.DataFrame(rows)


def machine_panel(probe: Optional[Probe], busy: bool) -> None:
    """What the probe measured on this machine, and a button to measure (again)."""
    with st.expander("This machine's speed", icon=":material/speed:", expanded=probe is None):
        st.caption(machine.summary(machine.describe()))
        if probe is None:
            st.info("Not measured yet. The time budget and the presets' expected times come from this "
                    "machine's own measurement.", icon=":material/info:")
        else:
            st.dataframe(speeds_frame(probe), hide_index=True)
            st.caption(f"Measured in {probe.seconds:.0f} s; training steps on random data. "
                       f"`python -m cifar_core probe` measures from a terminal.")
        measure_button(busy, "Measure this machine" if probe is None else "Measure again")


def budget_minutes(preset_name: str) -> float:
    """The time-budget control: a budget preset's minutes, editable; 0 trains fixed epochs."""
    preset = presets.PRESETS[preset_name]
    if preset_name == "assignment":
        st.caption("The Assignment preset is the seed's fixed recipe: no time budget.")
        return 0.0
    return float(st.number_input(
        "Time budget (minutes of training)", min_value=0.0, max_value=7 * 24 * 60.0,
        value=(preset.budget_seconds or 0.0) / 60, step=1.0, key=f"cifar_budget_{preset_name}",
        help="The network width, epochs, batch and precision expected to give the best test accuracy "
             "within this much training time on this machine (validation and saving come on top). "
             "0: train the epochs you set."))


def show_plan(plan: planner.Plan) -> None:
    st.success(f"**Plan:** {planner.describe_option(plan.chosen)}.", icon=":material/event_available:")
    st.caption(f"Precision: {plan.precision_note}. Accuracy from runs measured on the real images "
               f"({planner.table.MEASURED_ON}); time from this machine's probe.")
    if plan.runners_up:
        st.dataframe(pd.DataFrame([{
            "runner-up": o.candidate.label, "epochs": o.epochs, "expected s": round(o.seconds),
            "expected accuracy (TTA)": None if o.expected is None else f"{o.expected.accuracy_tta:.1%}"}
            for o in plan.runners_up]), hide_index=True)


def plan_for(minutes: float, probe: Optional[Probe], base: TrainConfig) -> Optional[planner.Plan]:
    """The plan shown for a budget (None without a budget or a probe; an impossible budget says why)."""
    if minutes <= 0:
        return None
    if probe is None:
        st.warning("Measure this machine first (above): a budget is planned from its measured speed.",
                   icon=":material/speed:")
        return None
    try:
        plan = planner.plan(minutes * 60, probe, base=base)
    except planner.PlanError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    show_plan(plan)
    return plan
