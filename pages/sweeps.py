"""Sweeps: search recipes with Optuna while you are away, and the run queue. Create a sweep, start
or stop it on this server (or run `python -m cifar_core sweep run NAME` on any machine sharing the
storage), watch its trials live, and open any trial's run."""
from typing import Optional

import streamlit as st

from cifar_core import charts, data
from cifar_core.recipes import presets
from cifar_core.sweeps import studies
from cifar_core.sweeps.runner import runner
from cifar_core.sweeps.storage import SweepError, describe_for_viewers
from cifar_ui import access, nav, sweeps, widgets

nav.require_entry(nav.SWEEPS)

REFRESH_SECONDS = 5.0  # trials take minutes: a slow refresh keeps up

st.title("Sweeps")
st.caption(f"Studies live in {describe_for_viewers()}. Several workers (this server, `python -m cifar_core sweep run NAME` "
           "elsewhere) share a sweep's trials; each trial is an ordinary run, named after the sweep.")
allowed, viewer = access.can_act(), access.read_only()
locked = access.locked_reason() or None


def open_run_link(run_id: Optional[str]) -> None:
    if run_id:
        st.session_state[widgets.RUN_STATE_KEY] = run_id
        cols = st.columns(3)
        cols[0].page_link(nav.EVALUATE.path, label=f"Evaluate run {run_id}", icon=nav.EVALUATE.icon)
        cols[1].page_link(nav.BROWSE.path, label="Browse its predictions", icon=nav.BROWSE.icon)
        cols[2].page_link(nav.RUNS.path, label="Runs", icon=nav.RUNS.icon)


def new_sweep_form(first: bool) -> None:
    with st.expander("New sweep", icon=":material/add:", expanded=first):
        # outside the form: the sampler decides whether the form asks for a trial count
        sampler = st.selectbox("Sampler", studies.SAMPLERS, key="cifar_new_sweep_sampler",
                               help="grid: every combination of the choices once (choices only).")
        with st.form("new_sweep"):
            c1, c2 = st.columns(2)
            name = c1.text_input("Sweep name", placeholder="e.g. lr-smoothing")
            preset_name = c2.selectbox("Recipe it starts from", [p for p in presets.PRESETS] + ["budget"],
                                       index=1, format_func=lambda n: presets.PRESETS[n].title if n in presets.PRESETS
                                       else "Fast recipe, any width")
            space = st.text_area("Search space: one FIELD=SPEC per line", value=sweeps.EXAMPLE_SPACE,
                                 help="LOW..HIGH, LOW..HIGH:log or A,B,C for any training-config field "
                                      "(widths: 16/64/64,32/128/128).")
            c1, c2, c3 = st.columns(3)
            epochs = c1.number_input("Epochs per trial", min_value=1, max_value=1000, value=4)
            if sampler == "grid":  # each point once: the grid's size is the count
                trials = None
                c2.caption("Trials: one per point of the grid (the choices' combinations), counted from the "
                           "space when the sweep is created.")
            else:
                trials = c2.number_input("Trials", min_value=1, max_value=10_000, value=12)
            minutes = c3.number_input("Time limit (minutes, 0: none)", min_value=0.0, value=0.0, step=10.0)
            c1, c2 = st.columns(2)
            pruner = c1.selectbox("Pruner", studies.PRUNERS)
            objective = c2.selectbox("Objective", studies.OBJECTIVES,
                                     help="accuracy-and-time: also fewer training seconds (the Pareto front).")
            c1, c2, c3 = st.columns(3)
            source = c1.text_input("Data source", value=widgets.shown(data.resolve_source()))
            train_subset = c2.number_input("Train images", min_value=1, value=None, placeholder="all")
            test_subset = c3.number_input("Test images", min_value=1, value=None, placeholder="all")
            start_here = st.checkbox("Start it on this server now", value=True)
            submitted = st.form_submit_button("Create sweep", type="primary", icon=":material/add:",
                                              disabled=not allowed, help=locked)
        if submitted and allowed:
            try:
                base = presets.preset_config(preset_name, epochs=int(epochs), data=source,
                                             train_subset=None if train_subset is None else int(train_subset),
                                             test_subset=None if test_subset is None else int(test_subset))
                if base.warmup_epochs > base.epochs:
                    base = base.replace(warmup_epochs=round(presets.WARMUP_SHARE * base.epochs, 3))
                sweep = studies.create(studies.define(
                    name.strip(), [line for line in space.splitlines() if line.strip()], base, trials=None if trials is None else int(trials),
                    minutes=minutes or None, sampler=sampler, pruner=pruner, objective=objective))
                if start_here:
                    runner().work_on(sweep.name)
            except (SweepError, ValueError) as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.session_state["cifar_sweep"] = sweep.name
                st.rerun()


def queue_section() -> None:
    st.subheader("Run queue", divider="gray")
    try:
        sweep, study = studies.load(studies.QUEUE)
    except SweepError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    note = st.session_state.pop("cifar_queue_note", None)
    if note:
        st.info(note, icon=":material/stop:")
    try:
        rows = [r for r in studies.trial_rows(sweep, study) if r["state"] != "removed"]
    except SweepError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    if not rows:
        st.caption("Empty. On Train, **Add to queue** puts a configured run here; this server trains queued "
                   "runs one after another whenever its trainer is free (`python -m cifar_core queue add ...` "
                   "from a terminal).")
        return
    st.dataframe(sweeps.trials_frame(rows), hide_index=True)
    open_runs = [r["trial"] for r in rows if r["state"] in ("waiting", "running")]
    if open_runs and not viewer:
        c1, c2 = st.columns([1, 3])
        number = c1.selectbox("Queued run", open_runs, format_func=lambda n: f"#{n}", label_visibility="collapsed")
        if c2.button("Remove from queue", icon=":material/remove:", disabled=not allowed,
                     help=locked or "A waiting run never starts; a running one is stopped by its worker.") and allowed:
            try:
                was = studies.remove(int(number))
            except SweepError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                if was == "running":
                    st.session_state["cifar_queue_note"] = f"Run #{number} was running: its worker stops it."
                st.rerun()


def sweep_section(name: str) -> None:
    @st.fragment(run_every=REFRESH_SECONDS)
    def live() -> None:
        try:
            sweep, study = studies.load(name)
        except SweepError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        try:
            rows = studies.trial_rows(sweep, study)
        except SweepError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        here = name in runner().sweeps
        st.markdown(f"**{studies.summary(sweep, rows)}**")
        st.caption(f"Searching {', '.join(d.spec for d in sweep.space)} with {sweep.sampler}, pruner {sweep.pruner}; "
                   f"objective {sweep.objective} ({sweep.metric.replace('_', ' ')}, final)."
                   + (" This server is working on it." if here else ""))
        if not viewer:
            c1, c2 = st.columns(2)
            if c1.button("Start on this server", icon=":material/play_arrow:", disabled=here or sweep.stopped
                         or not allowed, help=locked, key=f"sweep_start_{name}") and allowed:
                runner().work_on(name)
                st.rerun()
            if c2.button("Stop sweep", icon=":material/stop:", disabled=sweep.stopped or not allowed,
                         help=locked or "No new trial starts on any worker; running ones finish.",
                         key=f"sweep_stop_{name}") and allowed:
                studies.stop(name)
                runner().leave(name)
                st.rerun()
        if not rows:
            st.info("No trial yet. Start it on this server, or run "
                    f"`python -m cifar_core sweep run {name}` on any machine sharing the storage.",
                    icon=":material/hourglass_top:")
            return
        picked = st.dataframe(sweeps.trials_frame(rows), hide_index=True, on_select="rerun",
                              selection_mode="single-row", key=f"sweep_trials_{name}")
        chosen = picked.selection.rows if picked else []
        if chosen:
            open_run_link(rows[chosen[0]].get("run"))
        else:
            st.caption("Select a trial's row to open its run.")
        st.plotly_chart(charts.best_so_far(*studies.best_so_far(rows), metric=sweep.metric.replace("_", " ")))
        for title, fig, why in sweeps.optuna_figures(sweep, study):
            if fig is None:
                st.caption(f"{title}: {why}")
            else:
                st.plotly_chart(fig)

    live()


try:
    listed = studies.load_all()  # one read of the storage per run of the page
except SweepError as exc:
    st.error(str(exc), icon=":material/error:")
    listed = []
for broken in (s for s in listed if isinstance(s, studies.Broken)):
    st.warning(f"{broken.reason}; skipped.", icon=":material/warning:")
known = [s.name for s in listed if isinstance(s, studies.Sweep)]
if not viewer:
    new_sweep_form(first=not known)
if known:
    st.subheader("Sweep", divider="gray")
    remembered = st.session_state.get("cifar_sweep")
    name = st.selectbox("Sweep", known, index=known.index(remembered) if remembered in known else len(known) - 1,
                        label_visibility="collapsed")
    st.session_state["cifar_sweep"] = name
    sweep_section(name)
if runner().last_error:
    st.warning(f"The server's sweep worker cannot reach the storage: {runner().last_error}", icon=":material/warning:")
queue_section()
