"""The Train page's learning-rate finder: the range test on the form's recipe (cifar_core/training/
lr_finder.py), loss against rate with the suggestion marked, and "Use this rate" to fill the form."""
from __future__ import annotations

from typing import Callable

import streamlit as st

from cifar_core import data, trainer_lock
from cifar_core.charts.lr_finder import lr_finder_curve
from cifar_core.config import TrainConfig
from cifar_core.training import lr_finder

from . import access

RESULT_KEY = "cifar_lr_finder"  # session state: the last range test of this tab and the form it was for
FORM_RANGE = (0.00001, 1.0)  # what the Train form's learning-rate field accepts
BUTTON = "Find a learning rate"
APPLY = "Use this rate"


def button_help(busy: bool, planned: bool) -> str:
    """Why the finder's button is disabled, else what it does."""
    if access.locked_reason():
        return access.locked_reason()
    if busy:
        return "A training job (or the probe) holds this machine's trainer: find a learning rate once it has ended."
    if planned:
        return "The time budget's plan sets the learning rate from its batch: set the budget to 0 to choose it."
    return (f"A short run from a fresh model of this recipe, the rate growing exponentially from "
            f"{lr_finder.DEFAULT_START_LR:g} to {lr_finder.DEFAULT_END_LR:g} over {lr_finder.DEFAULT_STEPS} steps "
            f"(the range test); suggests a rate. Writes no run.")


def find(make_config: Callable[[], TrainConfig], form_key: str, busy: bool) -> None:
    """Run the range test on the form's recipe (the form was just submitted with the finder's button);
    the result stays in this tab's session for `show`."""
    if busy or not access.can_act():  # checked again: the button's state is only what the browser saw
        return
    try:
        config = make_config()
    except ValueError as exc:
        st.error(f"Check the form: {exc}", icon=":material/error:")
        return
    bar = st.progress(0.0, text="Finding a learning rate: building a fresh model")

    def progress(step: int, total: int, lr: float, loss: float) -> None:
        bar.progress(step / total, text=f"Range test: step {step}/{total}, learning rate {lr:.1e}, loss {loss:.3f}")

    try:
        result = lr_finder.find_learning_rate(config, on_step=progress)
    except (trainer_lock.JobBusyError, data.DataError, ValueError) as exc:
        st.error(str(exc), icon=":material/error:")
        return
    finally:
        bar.empty()
    st.session_state[RESULT_KEY] = {"form": form_key, "result": result, "recipe_lr": config.learning_rate}


def show(form_key: str, rate_key: str, planned: bool) -> None:
    """The last range test made for this form: the chart, the suggestion and its rule, and a button
    that puts the suggestion into the form's learning-rate field (session state `rate_key`)."""
    found = st.session_state.get(RESULT_KEY)
    if not found or found["form"] != form_key:
        return
    result: lr_finder.LRFinderResult = found["result"]
    others = [(name, rate) for name, rate in (("minimum", result.minimum_rule_lr), ("steepest", result.steepest_rule_lr))
              if name != result.rule and rate is not None]
    with st.container(border=True):
        st.plotly_chart(lr_finder_curve(result.learning_rates, result.losses, result.smoothed, result.suggestion,
                                        result.rule, others=others), key="cifar_lr_finder_chart")
        steps = len(result.learning_rates)
        ended = "every step taken" if result.ended == "completed" else "stopped early: the loss diverged"
        st.caption(f"{steps} steps of {result.batch_size} images in {result.seconds:.0f} s ({result.precision}), "
                   f"{result.start_lr:g} to {result.learning_rates[-1] if steps else result.end_lr:.2g}; {ended}."
                   + (f" Note: {result.note}." if result.note else ""))
        if result.suggestion is None:
            st.warning(f"No suggestion by the {result.rule} rule: {result.note or 'the curve gives none'}.",
                       icon=":material/warning:")
            return
        st.markdown(f"**Suggested learning rate: {result.suggestion:.2g}**, by the {result.rule} rule: "
                    f"{result.rule_text}. The recipe's own: {found['recipe_lr']:g}."
                    + "".join(f" The {name} rule gives {rate:.2g}." for name, rate in others))
        low, high = FORM_RANGE
        reason = ("The time budget's plan sets the learning rate: set the budget to 0 to choose it." if planned
                  else f"Outside the form's range ({low:g} to {high:g})." if not low <= result.suggestion <= high
                  else f"Puts {result.suggestion:.2g} into the form's learning rate.")
        st.button(APPLY, icon=":material/input:", on_click=_apply, args=(rate_key, result.suggestion),
                  disabled=planned or not low <= result.suggestion <= high, help=reason, key="cifar_lr_finder_apply")


def _apply(rate_key: str, rate: float) -> None:
    st.session_state[rate_key] = rate  # a callback: set before the form's field is drawn again
