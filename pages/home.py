"""Home: what the app does, the data source in use, the current job, the latest runs, links."""
import streamlit as st

from cifar_core import data, runs
from cifar_ui import fmt, progress_panel, nav, running, widgets

nav.require_entry(nav.HOME)

LATEST_RUNS = 5  # rows in the "latest runs" table
NEW_RUN_POLL_SECONDS = 5.0  # how often to look for a run started or ended elsewhere

st.title("CIFAR-10 Lab")
st.markdown(
    "Train the assignment's convolutional network on **CIFAR-10** (60,000 32×32 colour images of ten "
    "classes), watch it learn live, evaluate it on the test set, and ask it about your own pictures. "
    "Runs are kept on disk, so you can compare, download, resume or delete them later."
)

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Data source")
    st.markdown(f"In use: `{widgets.shown(data.resolve_source())}` — {widgets.shown(data.describe_source())}")
    with st.expander("How to change it"):
        st.markdown(
            f"- For one run: pick a source in the **Train** form.\n"
            f"- For the whole app: set `{data.DATA_ENV}` before starting it, e.g. "
            f"`{data.DATA_ENV}=synthetic streamlit run dashboard.py`.\n"
            f"- Values: `keras` (the official download, the default; needs internet once), "
            f"`synthetic` (a built-in demo set, no download, trains in seconds), or a path to "
            f"`cifar-10-python.tar.gz`, an extracted `cifar-10-batches-py` folder, or an image folder "
            f"`<root>/train|test/<class>/*.png`."
        )

    st.subheader("Current job")
    found = running.targets()
    active = [t.run_id for t in found if t.is_active()]

    # An active run's progress is drawn by the browser from the live feed (cifar_ui/progress_panel.py);
    # this fragment then only looks, now and then, for a run started elsewhere.
    in_browser = bool(active) and progress_panel.available() and not st.session_state.get("cifar_live_fallback")

    @st.fragment(run_every=(NEW_RUN_POLL_SECONDS if in_browser else 2.0) if active else NEW_RUN_POLL_SECONDS)
    def job_status() -> None:
        now = running.targets()
        if [t.run_id for t in now if t.is_active()] != active:
            st.rerun(scope="app")  # one finished or one started elsewhere: refresh the runs table too
        if not now:
            st.caption("No run yet. Runs started anywhere (this page, the command line, a sweep) show up "
                       "here while they train.")
        for target in now:
            snap = target.view()
            if snap is None:
                continue
            if in_browser and snap.is_active:
                event = progress_panel.render(target.run_id, target.view, key=f"cifar_home_live_{target.run_id}")
                if event == "unavailable":
                    st.session_state["cifar_live_fallback"] = True
                if event is not None:
                    st.rerun(scope="app")
            else:
                widgets.job_progress(snap)
            if snap.is_active:
                st.caption(f"Trained by {widgets.shown(snap.owner) or 'a job process (no report yet)'}.")
        st.page_link(nav.TRAIN.path, label="Open Train", icon=nav.TRAIN.icon)

    job_status()

    st.subheader("Latest runs")
    all_runs = runs.list_runs()
    if not all_runs:
        widgets.empty_state("No runs yet. Train one: a quick run on the synthetic data takes seconds.")
    else:
        st.dataframe(
            fmt.runs_frame(all_runs[:LATEST_RUNS])[["run", "started", "status", "epochs", "test accuracy"]],
            hide_index=True, placeholder="–",
            column_config={"test accuracy": st.column_config.NumberColumn("accuracy", format="percent", width="small"),
                           "status": st.column_config.TextColumn(width="small"),
                           "epochs": st.column_config.TextColumn(width="small"),
                           "started": st.column_config.DatetimeColumn(format="MM-DD HH:mm", width="small")},
        )
        if len(all_runs) > LATEST_RUNS:
            st.caption(f"{len(all_runs) - LATEST_RUNS} older run(s) on the Runs page.")

with right:
    st.subheader("Pages")
    for page in nav.PAGES[1:]:
        st.page_link(page.path, label=page.title, icon=page.icon)
        st.caption(page.blurb)
