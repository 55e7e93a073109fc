"""The dashboard's pages in one list: the entry builds navigation from it, Home links to each,
and every page makes sure it runs inside the entry (see `require_entry`)."""
from __future__ import annotations

import dataclasses

import streamlit as st

ENTRY = "dashboard.py"
TARGET_PARAM = "page"  # query parameter carrying a deep link through the entry


@dataclasses.dataclass(frozen=True)
class PageInfo:
    path: str  # relative to dashboard.py, as st.Page and st.page_link want it
    title: str
    icon: str
    blurb: str  # one line for Home


HOME = PageInfo("pages/home.py", "Home", ":material/home:", "What this app does and where things stand.")
DATA = PageInfo("pages/data.py", "Data", ":material/photo_library:",
                "The images per class, a batch as the network sees it in training, train/test near-duplicates.")
TRAIN = PageInfo("pages/train.py", "Train", ":material/model_training:",
                 "Configure and start a run; watch loss and accuracy live; stop or resume.")
EVALUATE = PageInfo("pages/evaluate.py", "Evaluate", ":material/analytics:",
                    "Test accuracy, confusion matrix, per-class scores and the first four test images.")
PREDICT = PageInfo("pages/predict.py", "Predict", ":material/image_search:",
                   "Upload your own pictures and see what the model thinks, and why.")
BROWSE = PageInfo("pages/browse.py", "Browse", ":material/grid_view:",
                  "Page through test-set predictions; find the worst mistakes.")
RUNS = PageInfo("pages/runs.py", "Runs", ":material/history:",
                "All runs: compare curves, download models and histories, delete.")

SWEEPS = PageInfo("pages/sweeps.py", "Sweeps", ":material/tune:",
                  "Search recipes with Optuna while you are away; the run queue.")

PAGES = (HOME, DATA, TRAIN, EVALUATE, PREDICT, BROWSE, RUNS, SWEEPS)

_entry_ran = False  # process-wide, like Streamlit's own switch away from the legacy pages/ mode


def mark_entry_ran() -> None:
    global _entry_ran
    _entry_ran = True


def require_entry(page: PageInfo) -> None:
    """Send a page that runs without the entry through it, keeping the destination; then show
    the lab's lock in the sidebar (cifar_ui/access.py), on every page.

    Until some session has run dashboard.py (and so st.navigation), Streamlit treats `pages/` as
    a legacy multipage folder: a deep link into a freshly started server runs the page alone,
    without page config or our navigation. That happens at most once per server process.
    """
    if not _entry_ran:
        # the link's own parameters (Browse's filters) travel along
        st.switch_page(ENTRY, query_params={**st.query_params.to_dict(), TARGET_PARAM: page.path})
    from . import access  # every page starts here, so every page shows the lab's lock

    access.sidebar()
