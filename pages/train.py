"""Train: configure and start a run, watch it learn live, stop it, resume a stopped one.

Start launches a job process (cifar_core/jobs) and the page watches its run folder, as every tab and
page does and as it watches runs started anywhere else. While a run trains, the browser draws its
progress and curves from files the server keeps fresh (cifar_ui/progress_panel.py): watching costs
no script run per refresh."""
from typing import Optional

import streamlit as st

from cifar_core import charts, data, jobs, runs, training
from cifar_core.insight import evaluation
from cifar_core.training import publisher as live
from cifar_core.recipes import presets
from cifar_core.config import ARCHITECTURES, PRECISIONS, TTA_LEVELS, TrainConfig
from cifar_core.planning import planner
from cifar_core.planning.probe import load_probe
from cifar_core.recipes.presets import PLANNED_FIELDS
from cifar_core.sweeps import studies
from cifar_core.sweeps.storage import SweepError
from cifar_ui import access, budget, fmt, progress_panel, lr_finder, nav, network, running, widgets
from cifar_ui.evolution import render_evolution

nav.require_entry(nav.TRAIN)

REFRESH_SECONDS = 1.0  # progress refresh while a job runs, when the browser cannot fetch the live feed
CURVES_SECONDS = live.PUBLISH_SECONDS  # the curves change only when the trainer publishes them
EVOLUTION_SECONDS = 10.0  # the per-epoch confusion changes once an epoch: a slow refresh is enough
NEW_RUN_POLL_SECONDS = 5.0  # while idle: how often to look for a run started elsewhere
EVOLUTION_KEY = "cifar_train_evolution"  # its container: the live panel reruns the page for it only while it shows

st.title("Train")
busy_reason = widgets.machine_busy()  # what holds the machine's trainer now, if anything
busy = busy_reason is not None

form_col, job_col = st.columns([1, 2], gap="large")


def recipe_inputs(base: TrainConfig, planned: bool, probe) -> dict:
    """The recipe's knobs, filled from the preset (or the budget's plan, whose choices are shown
    but not editable); returns TrainConfig fields."""
    def choice(label: str, options: tuple, value: str, **kw) -> str:
        return st.selectbox(label, options, index=options.index(value), **kw)

    out = {}
    out["architecture"] = choice("Network", ARCHITECTURES, base.architecture, disabled=planned,
                                 help="assignment: the course's CNN; assignment_bn: the same with BatchNorm; "
                                      "airbench: the compact whitening/BatchNorm net of the fast presets.")
    w = st.columns(3)
    out["widths"] = tuple(int(col.number_input(f"Width {i + 1}", min_value=1, max_value=2048, value=v,
                                               disabled=planned))
                          for i, (col, v) in enumerate(zip(w, base.widths)))
    out["precision"] = choice("Precision", PRECISIONS, base.precision, disabled=planned,
                              help="bfloat16 / float16: Keras mixed precision (float32 weights, 16-bit arithmetic); "
                                   "auto: 16-bit where this machine's probe measured it worth it. "
                                   + precision_speedup_text(probe))
    out["activation"] = choice("Activation", ("relu", "gelu"), base.activation)
    out["whitening"] = st.checkbox("Patch-whitening first layer (airbench)", value=base.whitening)
    out["dropout"] = st.slider("Dropout", min_value=0.0, max_value=0.9, value=base.dropout, step=0.05)
    out["optimizer"] = choice("Optimizer", ("adam", "adamw", "sgd"), base.optimizer,
                              help="sgd uses Nesterov momentum.")
    c1, c2 = st.columns(2)
    out["momentum"] = c1.number_input("Momentum (sgd)", min_value=0.0, max_value=0.999, value=base.momentum)
    out["weight_decay"] = c2.number_input("Weight decay", min_value=0.0, max_value=1.0, value=base.weight_decay,
                                          format="%.4f", help="Decoupled: weights shrink by lr x this per step.")
    out["lr_schedule"] = choice("Learning-rate schedule", ("constant", "cosine", "onecycle"), base.lr_schedule)
    c1, c2, c3 = st.columns(3)
    out["warmup_epochs"] = c1.number_input("Warm-up epochs", min_value=0.0, max_value=1000.0,
                                           value=float(base.warmup_epochs))
    out["lr_start_factor"] = c2.number_input("Start factor", min_value=0.0, max_value=1.0,
                                             value=base.lr_start_factor)
    out["lr_end_factor"] = c3.number_input("End factor", min_value=0.0, max_value=1.0, value=base.lr_end_factor)
    out["label_smoothing"] = st.number_input("Label smoothing", min_value=0.0, max_value=0.5,
                                             value=base.label_smoothing)
    out["augment"] = choice("Augmentation (training only)", ("none", "flip", "flip_translate"), base.augment)
    out["weight_averaging"] = choice("Weight averaging", ("none", "ema", "lookahead"), base.weight_averaging)
    out["early_stopping_patience"] = int(st.number_input(
        "Early stopping patience (0: off)", min_value=0, max_value=1000, value=base.early_stopping_patience,
        help="Stops after this many epochs without a better validation accuracy and keeps the best weights."))
    out["tta"] = choice("Test-time augmentation", TTA_LEVELS, base.tta,
                        help="Reported beside the plain test accuracy at the end.")
    return out


allowed = access.can_act()  # cifar_ui/access.py: read-only viewers get no form, a locked lab a disabled one


def precision_speedup_text(probe) -> str:
    """The assignment network's measured bfloat16 speed-up on this machine, where probed."""
    ratio = probe and probe.speedup("assignment", TrainConfig().widths, TrainConfig().batch_size, "bfloat16")
    return f"Measured here: bfloat16 trains the assignment's network {ratio:.2f}x as fast." if ratio else ""


def new_run_form() -> None:
    preset_name = st.selectbox(
        "Recipe", list(presets.PRESETS), index=list(presets.PRESETS).index(presets.DEFAULT_PRESET),
        format_func=lambda n: presets.PRESETS[n].title, key="cifar_preset",
        help="A preset fills the form below; every field stays editable.")
    preset = presets.PRESETS[preset_name]
    probe = load_probe()
    budget.machine_panel(probe, busy)
    st.caption(f"{preset.description} Expected here: {planner.preset_expectation(preset_name, probe)}.")
    # The data comes before the budget: a plan's epochs depend on how many images an epoch has.
    source = widgets.data_source_picker()
    st.caption("Quick run: use fewer images (leave empty for all).")
    c1, c2 = st.columns(2)
    train_subset = c1.number_input("Train images", min_value=1, value=None, step=1000, placeholder="all",
                                   key="cifar_train_subset")
    test_subset = c2.number_input("Test images", min_value=1, value=None, step=500, placeholder="all",
                                  key="cifar_test_subset")
    chosen_data = dict(data=source, train_subset=None if train_subset is None else int(train_subset),
                       test_subset=None if test_subset is None else int(test_subset))
    minutes = budget.budget_minutes(preset_name)
    try:
        plan = budget.plan_for(minutes, probe, presets.preset_config(preset_name, **chosen_data))
    except ValueError as exc:  # a subset the config refuses
        st.error(f"Check the data: {exc}", icon=":material/error:")
        plan = None
    base = plan.config if plan else presets.preset_config(preset_name)
    form_key = f"config-{preset_name}" + (f"-{plan.config.widths}-{plan.config.epochs}-{probe.measured_at}" if plan else "")
    with st.form(form_key):  # one form per preset and plan: switching either refills it
        n1, n2 = st.columns(2)
        run_name = n1.text_input("Run name", max_chars=runs.MAX_NAME, placeholder="optional",
                                 help="Shown in every run picker and on Runs; the run id stays the folder name.")
        run_tags = n2.text_input("Tags", placeholder="e.g. baseline lr-sweep",
                                 help="Separated by spaces or commas; Runs filters by them.")
        epochs = st.number_input("Epochs", min_value=1, max_value=1000, value=base.epochs, disabled=plan is not None,
                                 help="Planned for the time budget." if plan else None)
        batch_size = st.number_input("Batch size", min_value=1, max_value=8192, value=base.batch_size,
                                     disabled=plan is not None)
        learning_rate = st.number_input("Learning rate (peak)", min_value=0.00001, max_value=1.0,
                                        value=base.learning_rate, step=0.0005, format="%.5f",
                                        disabled=plan is not None,  # a plan sets it from its batch
                                        key=f"{form_key}-learning-rate")  # "Use this rate" fills it
        find = st.form_submit_button(lr_finder.BUTTON, icon=":material/query_stats:",
                                     disabled=busy or not allowed or plan is not None,
                                     help=lr_finder.button_help(busy, plan is not None))
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=base.seed)
        with st.expander("Recipe details", icon=":material/tune:"):
            recipe = recipe_inputs(base, planned=plan is not None, probe=probe)
        waiting = minutes > 0 and plan is None  # a budget without a plan: no probe, or an impossible budget
        # one above the other, each the form's width: side by side they were cut at 1280 px
        start = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:",
                                      disabled=busy or not allowed or waiting, width="stretch",
                                      help=access.locked_reason() or ("Needs a plan for the budget." if waiting else None))
        queue = st.form_submit_button("Add to queue", icon=":material/queue:", disabled=not allowed or waiting,
                                      width="stretch",
                                      help=access.locked_reason() or "This server trains queued runs one after "
                                                                     "another when the machine's trainer is free "
                                                                     "(Sweeps page).")
    network.recipe_section(network.recipe_config(base, recipe))  # cifar_ui/network.py: built only when opened
    if busy:
        st.info(f"Start is disabled: {busy_reason}.", icon=":material/hourglass_top:")

    def form_config() -> TrainConfig:
        return presets.preset_config(
            base.preset, epochs=int(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
            seed=int(seed), **chosen_data, **recipe)

    if find and allowed and plan is None:
        lr_finder.find(form_config, form_key, busy)
    lr_finder.show(form_key, f"{form_key}-learning-rate", planned=plan is not None)
    if (start or queue) and allowed:  # a stale tab can still submit while busy: jobs.start then says why it refuses
        try:
            config = form_config()
            if plan is not None:  # the plan decides its fields; the form the rest
                config = config.replace(**{f: getattr(plan.config, f) for f in PLANNED_FIELDS})
            if queue:
                data.locate_source(config.data)  # a typo in the path: refused now, not when its turn comes
                number = studies.enqueue(config, name=run_name.strip(), tags=tuple(runs.clean_meta(tags=run_tags)["tags"]),
                                         plan=plan.to_dict() if plan else None)
                st.success(f"Queued as #{number}: it trains when the trainer is free (Sweeps page shows the queue).",
                           icon=":material/queue:")
            else:
                job = jobs.start(config, name=run_name, tags=run_tags, plan=plan.to_dict() if plan else None)
                st.session_state["cifar_watched_elsewhere"] = job.run_id  # this tab follows it to its end
        except ValueError as exc:
            st.error(f"Check the form: {exc}", icon=":material/error:")
        except (jobs.JobBusyError, runs.RunError, data.DataError, SweepError) as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            if not queue:
                st.rerun()


def resume_section() -> None:
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
            if st.button("Resume", icon=":material/play_arrow:", disabled=busy or not allowed,
                         help=access.locked_reason() or None) and allowed:
                try:
                    jobs.resume(run.run_id, epochs=int(total))
                    st.session_state["cifar_watched_elsewhere"] = run.run_id
                except (jobs.JobBusyError, runs.RunError, data.DataError) as exc:
                    st.error(str(exc), icon=":material/error:")
                else:
                    st.rerun()


with form_col:
    st.subheader("New run")
    if access.read_only():
        st.info("This lab is read-only: watch the current job here and browse every run on the other pages.",
                icon=":material/visibility:")
    else:
        new_run_form()
        resume_section()


RESULT_LINKS = ((nav.EVALUATE, "Evaluate", "Evaluate this run: test scores, confusion matrix, per-class scores."),
                (nav.BROWSE, "Browse predictions", "Browse this run's predictions on the test images."),
                (nav.PREDICT, "Try your pictures", "Upload your own pictures and see what the model thinks."))


def show_result(snap: training.JobSnapshot) -> None:
    """A finished job: failure, or final metrics and what the curves say."""
    if snap.status == "failed":  # a viewer reads the message without the server's paths and host
        error = snap.error if access.sees_internals() else fmt.public_text(snap.error)
        st.error(f"Training failed: {error}", icon=":material/error:")
        return
    metrics = snap.metrics or {}
    tta = "test_accuracy_tta" in metrics
    cols = iter(st.columns(5 if tta else 4))
    next(cols).metric("Test accuracy", fmt.pct(metrics.get("test_accuracy")), help="Plain: one view per image.")
    next(cols).metric("Test loss", fmt.number(metrics.get("test_loss")),
                      help=f"Mean cross-entropy {evaluation.loss_note(snap.config.label_smoothing)}".rstrip() + ".")
    if tta:
        next(cols).metric(f"With TTA ({metrics['tta']})", fmt.pct(metrics["test_accuracy_tta"]),
                          help="Mean prediction over augmented copies of each test image.")
    next(cols).metric("Epochs", f"{len(snap.history.get('loss', []))}/{snap.epochs}")
    seconds = snap.history.get("train_seconds")
    next(cols).metric("Training time", fmt.duration(seconds[-1] if seconds else None),
                      help=f"Excludes validation and saving; whole job "
                           f"{fmt.duration(fmt.elapsed(snap.started_at, snap.finished_at))}.")
    summary = evaluation.describe_summary(evaluation.summarize_history(snap.history))
    st.markdown("\n".join(f"- {line}" for line in summary))
    # Short labels in a row that wraps rather than cuts (three equal columns cut "Browse its
    # predictions" in the half page of a 1280 px window); each link's help says it in full.
    with st.container(horizontal=True, wrap=True, gap="medium"):
        for page, label, help_text in RESULT_LINKS:
            st.page_link(page.path, label=label, icon=page.icon, help=help_text)


def stop_if_allowed(target: running.Target) -> None:
    if access.can_act():  # checked again here: the button's state is only what the browser saw
        st.session_state["cifar_stop_note"] = target.stop()


def stop_controls(target: running.Target, snap: training.JobSnapshot) -> None:
    st.caption(f"Trained by {widgets.shown(snap.owner) or 'a job process (no report yet)'}; this page reads its run folder, "
               f"and Stop asks it to stop through that folder.")
    if not access.read_only():
        st.button("Stop", icon=":material/stop:", on_click=stop_if_allowed, args=(target,),
                  key=f"cifar_stop_{target.run_id}",
                  disabled=snap.status == "stopping" or not access.can_act(),
                  help=access.locked_reason() or "Stops after the current batch and saves the model.")
    note = st.session_state.get("cifar_stop_note")
    if note and snap.status != "stopping":
        st.caption(note)


def curve_controls() -> tuple[float, str]:
    smoothing = st.slider("Smoothing", min_value=0.0, max_value=0.99, value=charts.DEFAULT_SMOOTHING, step=0.01,
                          key="cifar_train_smoothing",
                          help="Exponential moving average of the per-batch values, as TensorBoard's "
                               "smoothing slider; 0 shows the raw values.")
    x_axis = st.segmented_control("Curves against", charts.X_AXES, default="epoch", key="cifar_train_x",
                                  format_func={"epoch": "Epochs", "minutes": "Training minutes"}.get) or "epoch"
    return smoothing, x_axis


def look(target: running.Target, active: bool) -> Optional[training.JobSnapshot]:
    """The run's snapshot, or None with a warning when it is gone. A run that was active when the
    page ran and has ended since reruns the page: Start enabled, the result shown, polling over."""
    snap = target.view()
    if snap is None:
        st.warning(f"Run `{target.run_id}` is gone (deleted, or the artifacts folder changed).",
                   icon=":material/warning:")
        return None
    if active and not snap.is_active:
        st.rerun(scope="app")
    return snap


def browser_panel(target: running.Target) -> None:
    """An active run, drawn by the browser from the live feed (cifar_ui/progress_panel.py): no script
    run per refresh. This fragment reruns only for its controls and when the browser reports an
    epoch's end (the per-class evolution below moves on); the run's end reruns the page."""

    @st.fragment
    def panel() -> None:
        snap = look(target, active=True)
        if snap is None:
            return
        stop_controls(target, snap)
        chart_box = st.container()
        smoothing, x_axis = curve_controls()
        with chart_box:
            event = progress_panel.render(target.run_id, target.view, key=f"cifar_live_{target.run_id}",
                                      smoothing=smoothing, x_axis=x_axis, epoch_key=EVOLUTION_KEY)
        if event == "unavailable":  # the files cannot be fetched (a proxy, static serving off): poll here
            st.session_state["cifar_live_fallback"] = True
        if event in ("ended", "unavailable"):
            st.rerun(scope="app")
        with st.container(key=EVOLUTION_KEY):  # an epoch's rerun is for this part, asked for while it is on screen
            evolution_section(target)

    panel()


def evolution_section(target: running.Target) -> None:
    st.subheader("How each class evolves", divider="gray")
    try:
        folder = runs.run_path(target.run_id)
    except runs.RunError:
        return
    render_evolution(folder, key=f"cifar_train_evolution_{target.run_id}")


def server_panel(target: running.Target, active: bool) -> None:
    """A run drawn by the page script: a finished run, or an active one where the browser cannot
    fetch the live feed (then fragments refresh the progress every second and the charts as often
    as the trainer publishes; the figures come from a cache shared by every tab, cifar_ui/running.py)."""

    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def progress() -> None:
        snap = look(target, active)
        if snap is None:
            return
        widgets.job_progress(snap)
        if snap.is_active:
            stop_controls(target, snap)
        else:
            show_result(snap)

    @st.fragment(run_every=CURVES_SECONDS if active else None)
    def curves() -> None:
        snap = target.view()
        if snap is None:
            return
        smoothing, x_axis = curve_controls()
        st.plotly_chart(running.batch_figure(snap, smoothing))
        left, right = st.columns(2)
        left.plotly_chart(running.epoch_figure(snap, "loss", x_axis))
        right.plotly_chart(running.epoch_figure(snap, "accuracy", x_axis))

    progress()
    curves()


def run_panel(target: running.Target, active: bool) -> None:
    """A run's progress and charts, this server's job or one training elsewhere: drawn by the
    browser while it trains (unless this tab fell back), by the page once it has ended."""
    if active and progress_panel.available() and not st.session_state.get("cifar_live_fallback"):
        browser_panel(target)
        return
    server_panel(target, active)

    @st.fragment(run_every=EVOLUTION_SECONDS if active else None)
    def mistakes() -> None:
        evolution_section(target)

    mistakes()


def watch_for_new_runs(count: int) -> None:
    """While nothing trains, look every few seconds for a run started elsewhere (the CLI, another
    server) and show it when one appears."""

    @st.fragment(run_every=NEW_RUN_POLL_SECONDS)
    def poll() -> None:
        if running.active_count() != count:
            st.rerun(scope="app")

    poll()


with job_col:
    st.subheader("Current job")
    found = running.targets(remembered=st.session_state.get("cifar_watched_elsewhere"))
    chosen = running.default_target(found)
    if len(found) > 1:
        ids = [t.run_id for t in found]
        labels = {t.run_id: f"{t.run_id} · {'training' if t.is_active() else 'ended'}" for t in found}
        picked = st.selectbox("Watching", ids, index=ids.index(chosen.run_id), format_func=labels.get,
                              key="cifar_watch_run", help="Runs training now under the artifacts folder, "
                                                          "started here or anywhere else.")
        chosen = found[ids.index(picked)]
    if chosen is None:
        st.info("No training job to show. Fill in the form and press **Start training**; "
                "for a first look, use the synthetic data with a few hundred images. A run started "
                "from the command line (`python -m cifar_core train`) shows up here too.",
                icon=":material/lightbulb:")
    else:
        st.session_state["cifar_watched_elsewhere"] = chosen.run_id  # keep showing it here once it ends
        run_panel(chosen, active=chosen.is_active())
    if not any(t.is_active() for t in found):
        watch_for_new_runs(0)
