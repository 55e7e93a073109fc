"""Train: configure and start a run, watch it learn live, stop it, resume a stopped one.

The job belongs to the server (`training.current_job()`), not to this tab: every tab and page
shows the same job. The live panel polls once a second only while a job is active."""
import streamlit as st

from cifar_core import charts, data, evaluation, runs, training
from cifar_core.config import TrainConfig
from cifar_ui import fmt, nav, widgets

nav.require_entry(nav.TRAIN)

DEFAULTS = TrainConfig()
REFRESH_SECONDS = 1.0  # live panel refresh while a job runs
SOURCES = ("keras", "synthetic")

st.title("Train")
job = widgets.visible_job()
snap = job.snapshot() if job else None
busy = job is not None and (job.is_alive or snap.is_active)

form_col, job_col = st.columns([1, 2], gap="large")

with form_col:
    st.subheader("New run")
    current_source = data.resolve_source()
    sources = list(SOURCES) + ([current_source] if current_source not in SOURCES else [])
    with st.form("config"):
        epochs = st.number_input("Epochs", min_value=1, max_value=1000, value=DEFAULTS.epochs)
        batch_size = st.number_input("Batch size", min_value=1, max_value=8192, value=DEFAULTS.batch_size)
        learning_rate = st.number_input("Learning rate", min_value=0.00001, max_value=1.0,
                                        value=DEFAULTS.learning_rate, step=0.0005, format="%.5f")
        dropout = st.slider("Dropout", min_value=0.0, max_value=0.9, value=DEFAULTS.dropout, step=0.05)
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=DEFAULTS.seed)
        source = st.selectbox("Data source", sources, index=sources.index(current_source),
                              accept_new_options=True,
                              help="keras: the official download; synthetic: a demo set that trains in "
                                   "seconds; or type a path to a local copy of CIFAR-10.")
        st.caption("Quick run: use fewer images (leave empty for all).")
        c1, c2 = st.columns(2)
        train_subset = c1.number_input("Train images", min_value=1, value=None, step=1000, placeholder="all")
        test_subset = c2.number_input("Test images", min_value=1, value=None, step=500, placeholder="all")
        start = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:",
                                      disabled=busy)
    if busy:
        st.info(f"Start is disabled while run `{snap.run_id}` is training: stop it or wait for it to finish.",
                icon=":material/hourglass_top:")
    if start:  # a stale tab can still submit while busy: start_job then says why it refuses
        try:
            config = TrainConfig(epochs=int(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
                                 dropout=float(dropout), seed=int(seed), data=source,
                                 train_subset=None if train_subset is None else int(train_subset),
                                 test_subset=None if test_subset is None else int(test_subset))
            training.start_job(config)
        except ValueError as exc:
            st.error(f"Check the form: {exc}", icon=":material/error:")
        except (training.JobBusyError, runs.RunError) as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.rerun()

    resumable = widgets.resumable_runs(runs.list_runs())
    with st.expander("Resume or extend a run", icon=":material/replay:"):
        if not resumable:
            st.caption("No stopped, interrupted or finished run with a saved model yet.")
        else:
            run = widgets.pick_run(resumable, label="Run to continue", state_key="cifar_resume_run")
            done = run.epochs_done
            total = st.number_input("Train up to epoch", min_value=done + 1, max_value=1000,
                                    value=max(run.config.epochs, done + 1),
                                    help=f"The run has {done} epoch(s); training continues from its last saved model.")
            if st.button("Resume", icon=":material/play_arrow:", disabled=busy):
                try:
                    training.resume_job(run.run_id, epochs=int(total))
                except (training.JobBusyError, runs.RunError) as exc:
                    st.error(str(exc), icon=":material/error:")
                else:
                    st.rerun()


def show_result(snap: training.JobSnapshot) -> None:
    """A finished job: failure, or final metrics and what the curves say."""
    if snap.status == "failed":
        st.error(f"Training failed: {snap.error}", icon=":material/error:")
        return
    metrics = snap.metrics or {}
    cols = st.columns(4)
    cols[0].metric("Test accuracy", fmt.pct(metrics.get("test_accuracy")))
    cols[1].metric("Test loss", fmt.number(metrics.get("test_loss")))
    cols[2].metric("Epochs", f"{len(snap.history.get('loss', []))}/{snap.epochs}")
    cols[3].metric("Duration", fmt.duration(fmt.elapsed(snap.started_at, snap.finished_at)))
    summary = evaluation.describe_summary(evaluation.summarize_history(snap.history))
    st.markdown("\n".join(f"- {line}" for line in summary))
    links = st.columns(3)
    links[0].page_link(nav.EVALUATE.path, label="Evaluate this run", icon=nav.EVALUATE.icon)
    links[1].page_link(nav.BROWSE.path, label="Browse its predictions", icon=nav.BROWSE.icon)
    links[2].page_link(nav.PREDICT.path, label="Try your own pictures", icon=nav.PREDICT.icon)


def live_panel(job: training.TrainingJob, active: bool) -> None:
    """The job's progress and charts; re-drawn every second only while the job is active."""

    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def panel() -> None:
        snap = job.snapshot()
        if active and not (snap.is_active or job.is_alive):
            st.rerun(scope="app")  # ended: enable Start, show results, stop polling
        widgets.job_progress(snap)
        if snap.is_active:
            st.button("Stop", icon=":material/stop:", on_click=training.stop_job,
                      disabled=snap.status == "stopping", help="Stops after the current batch and saves the model.")
        else:
            show_result(snap)
        st.plotly_chart(charts.batch_curves(snap.batch_steps, snap.batch_loss, snap.batch_accuracy))
        left, right = st.columns(2)
        left.plotly_chart(charts.epoch_curves(snap.history, "loss"))
        right.plotly_chart(charts.epoch_curves(snap.history, "accuracy"))

    panel()


with job_col:
    st.subheader("Current job")
    if job is None:
        st.info("No training job to show. Fill in the form and press **Start training**; "
                "for a first look, use the synthetic data with a few hundred images.", icon=":material/lightbulb:")
    else:
        live_panel(job, active=busy)
