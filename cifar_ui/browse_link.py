"""Browse's filters in the page URL: links from other pages (a confusion cell, a class's mistakes)
open Browse filtered, and a filtered view can be bookmarked or shared.

Query parameters: run (id), true and predicted (class names), show (all | wrong | correct), order
(a gallery.SORTS key), image (a test index to inspect). Defaults are left out of the URL.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import streamlit as st

from cifar_core.data import CLASS_NAMES

from . import gallery, nav, widgets

TRUE_KEY, PREDICTED_KEY, SHOW_KEY, ORDER_KEY = "browse_true", "browse_predicted", "browse_show", "browse_order"
SELECTED_KEY = "browse_selected_index"  # the inspected test image
PARAMS = ("run", "true", "predicted", "show", "order", "image")
DEFAULTS = {"show": "all", "order": "worst"}


def browse_params(run_id: str, true_label: Optional[int] = None, predicted_label: Optional[int] = None,
                  outcome: str = "all", order: str = "worst", image: Optional[int] = None) -> dict[str, str]:
    """The query parameters of a Browse view; default values are left out."""
    values = {"run": run_id,
              "true": None if true_label is None else CLASS_NAMES[int(true_label)],
              "predicted": None if predicted_label is None else CLASS_NAMES[int(predicted_label)],
              "show": outcome, "order": order, "image": None if image is None else str(int(image))}
    return {k: v for k, v in values.items() if v is not None and DEFAULTS.get(k) != v}


def open_browse(run_id: str, true_label: Optional[int] = None, predicted_label: Optional[int] = None,
                outcome: str = "all") -> None:
    """Go to Browse showing these test images (ends this script run)."""
    st.switch_page(nav.BROWSE.path, query_params=browse_params(run_id, true_label, predicted_label, outcome))


def _current() -> dict[str, str]:
    return {k: st.query_params[k] for k in PARAMS if k in st.query_params}


def parse(params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Widget values from query parameters, and a sentence for each parameter that was ignored."""
    values: dict[str, Any] = {TRUE_KEY: None, PREDICTED_KEY: None, SHOW_KEY: "all", ORDER_KEY: "worst",
                              SELECTED_KEY: None}
    problems = []
    for param, key in (("true", TRUE_KEY), ("predicted", PREDICTED_KEY)):
        if param in params:
            if params[param] in CLASS_NAMES:
                values[key] = CLASS_NAMES.index(params[param])
            else:
                problems.append(f"{param}={params[param]!r} is not a class name")
    for param, key, allowed in (("show", SHOW_KEY, gallery.OUTCOMES), ("order", ORDER_KEY, gallery.SORTS)):
        if param in params:
            if params[param] in allowed:
                values[key] = params[param]
            else:
                problems.append(f"{param}={params[param]!r} is not one of {', '.join(allowed)}")
    if "image" in params:
        if params["image"].isdigit():
            values[SELECTED_KEY] = int(params["image"])
        else:
            problems.append(f"image={params['image']!r} is not a test image number")
    if "run" in params:
        values[widgets.RUN_STATE_KEY] = params["run"]
    return values, problems


def read_filters(run_ids: list[str]) -> list[str]:
    """Before Browse draws its widgets: on the first run of a visit (a link from another page, a
    bookmark, a reload; Streamlit dropped the filter widgets' state when another page ran), set the
    widgets from the URL. Later runs keep what the user chose. Returns what was ignored, to show."""
    if TRUE_KEY in st.session_state:
        return []  # the widgets are alive: the URL holds what write_filters put there
    values, problems = parse(_current())
    run_id = values.pop(widgets.RUN_STATE_KEY, None)
    if run_id is not None and run_id not in run_ids:
        problems.append(f"run {run_id!r} has no model to browse")
    elif run_id is not None:
        st.session_state[widgets.RUN_STATE_KEY] = run_id
    for key, value in values.items():
        if value is None:
            # A selectbox whose state is None shows "Choose an option", not its None option ("All").
            st.session_state.pop(key, None)
        else:
            st.session_state[key] = value
    return problems


def write_filters(run_id: str, true_label: Optional[int], predicted_label: Optional[int], outcome: str,
                  order: str, image: Optional[int]) -> None:
    """After the widgets: put their values in the URL (only when they changed, so no extra message)."""
    params = browse_params(run_id, true_label, predicted_label, outcome, order, image)
    if params != _current():
        st.query_params.from_dict(params)
