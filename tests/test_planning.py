"""Time budgets: the machine probe, the planner, precision, and budgeted runs through the real CLI
and trainer (tiny networks and synthetic data; speeds injected where a test needs a machine)."""
from __future__ import annotations

import io
import json
import time

import keras
import pytest

from cifar_core import cli
from cifar_core.config import TrainConfig
from cifar_core.planning import machine, planner, probe as probing, table
from cifar_core.planning.probe import AIRBENCH_WIDTHS, Candidate, Probe, Speed

QUARTER, HALF, FULL = AIRBENCH_WIDTHS["quarter"], AIRBENCH_WIDTHS["half"], AIRBENCH_WIDTHS["full"]
TINY = (4, 8, 8)
# An accuracy table for tests: wider nets learn more per epoch and keep learning longer.
TABLE = {("airbench", QUARTER, 512): {2: (0.70, 0.72), 4: (0.79, 0.80), 8: (0.83, 0.84), 16: (0.85, 0.86)},
         ("airbench", HALF, 512): {2: (0.75, 0.77), 4: (0.84, 0.85), 8: (0.88, 0.89), 16: (0.90, 0.91)},
         ("airbench", FULL, 512): {2: (0.78, 0.80), 4: (0.87, 0.88), 8: (0.91, 0.92)}}


def make_probe(scale: float = 1.0, bf16_speedup: float = 2.0, **extra) -> Probe:
    """This machine's description with injected speeds (images/s), `scale` times a slow CPU's."""
    base = {QUARTER: 1000.0, HALF: 400.0, FULL: 130.0}
    speeds = []
    for precision, factor in (("float32", 1.0), ("bfloat16", bf16_speedup)):
        speeds += [Speed(Candidate("airbench", w, 512, precision), ips * scale * factor) for w, ips in base.items()]
        speeds.append(Speed(Candidate("assignment", TrainConfig().widths, 64, precision), 300 * scale * factor))
    return Probe(machine.describe(), time.time(), 1.0, tuple(speeds), **extra)


def save_probe(p: Probe) -> Probe:
    probing.probe_dir().mkdir(parents=True, exist_ok=True)
    probing.store.write_json(probing.probe_path(p.key), p.to_dict())
    return p


@pytest.fixture
def bf16_ok(monkeypatch):
    """The A/B table says bfloat16 kept the accuracy for every network."""
    monkeypatch.setattr(table, "PRECISION_AB", {a: {"float32": 0.80, "bfloat16": 0.80}
                                                for a in ("airbench", "assignment", "assignment_bn")})


# --- budgets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("1.5h", 5400),
                                            ("1h30m", 5400), ("300", 300), (" 2 min ", 120), (45, 45)])
def test_budgets_are_read_in_seconds_minutes_or_hours(text, seconds):
    assert planner.parse_budget(text) == seconds


@pytest.mark.parametrize("text, message", [("0", "more than 0"), ("0s", "more than 0"), ("3 parsecs", "cannot read"),
                                            ("", "cannot read"), ("-5m", "cannot read"), ("9999h", "at most a week")])
def test_bad_budgets_are_refused_with_a_reason(text, message):
    with pytest.raises(planner.PlanError, match=message):
        planner.parse_budget(text)


# --- the planner ------------------------------------------------------------------------------

def test_a_faster_machine_gets_a_wider_network(artifacts):
    slow = planner.plan("5m", make_probe(1.0), precision="float32", accuracy_table=TABLE)
    fast = planner.plan("5m", make_probe(4.0), precision="float32", accuracy_table=TABLE)
    assert slow.chosen.candidate.widths == QUARTER
    assert fast.chosen.candidate.widths in (HALF, FULL)
    assert sum(fast.chosen.candidate.widths) > sum(slow.chosen.candidate.widths)
    assert fast.config.widths == fast.chosen.candidate.widths and fast.config.epochs == fast.chosen.epochs


@pytest.mark.parametrize("budget", [20, 60, 90, 150, 300, 600, 1800, 3600, 4 * 3600])
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_a_plan_never_runs_past_its_budget(artifacts, budget, scale):
    try:
        p = planner.plan(budget, make_probe(scale), precision="float32", accuracy_table=TABLE)
    except planner.PlanError as exc:
        assert "too small" in str(exc)
        return
    assert p.chosen.seconds <= budget
    assert all(o.seconds <= budget for o in p.runners_up)
    assert p.chosen.candidate not in [o.candidate for o in p.runners_up]
    assert p.config.warmup_epochs == pytest.approx(planner.WARMUP_SHARE * p.config.epochs, abs=1e-3)


def test_an_impossible_budget_names_the_smallest_possible(artifacts):
    with pytest.raises(planner.PlanError, match=r"too small .* the smallest possible is about 106 s"):
        planner.plan("10s", make_probe(1.0), precision="float32", accuracy_table=TABLE)
    least = planner.smallest_budget(make_probe(1.0), precision="float32", accuracy_table=TABLE)
    # quarter width at 1,000 img/s for its shortest measured run, 2 epochs: 3 s + 100,000 / 980 s
    assert least == pytest.approx(planner.STARTUP_SECONDS + 2 * 50_000 / (1000 * planner.RUN_EFFICIENCY))
    smallest = planner.plan(least + 1, make_probe(1.0), precision="float32", accuracy_table=TABLE)
    assert smallest.chosen.passes >= 2 and smallest.chosen.candidate.widths == QUARTER


def test_a_plan_never_trains_a_network_for_fewer_epochs_than_were_measured(artifacts):
    for budget in (150, 300, 900):
        for option in planner.options(budget, make_probe(1.0), precision="float32", accuracy_table=TABLE):
            assert option.passes >= min(TABLE[("airbench", option.candidate.widths, 512)])


@pytest.mark.parametrize("budget", [107, 120, 300, 901, 3600])
def test_a_plan_fills_its_budget_to_within_a_step_in_equal_epochs(artifacts, budget):
    p = planner.plan(budget, make_probe(1.0), precision="float32", accuracy_table=TABLE)
    option, ips = p.chosen, next(s.images_per_second for s in make_probe(1.0).speeds if s.candidate == p.chosen.candidate)
    step_seconds = option.candidate.batch_size / (ips * planner.RUN_EFFICIENCY)
    assert budget - (option.epochs + 1) * step_seconds <= option.seconds <= budget  # at most a step per epoch left over
    assert option.steps_per_epoch <= option.full_steps == 98  # 50,000 images, batch 512
    assert (p.config.steps_per_epoch or option.full_steps) == option.steps_per_epoch
    assert p.config.epochs == option.epochs


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_a_long_budget_is_planned_no_further_than_one_doubling_past_the_measured_runs(artifacts, scale):
    probe = make_probe(scale)
    longest = planner.longest_budget(probe, precision="float32", accuracy_table=TABLE)
    for budget in (3600, 4 * 3600, 24 * 3600):
        found = planner.options(budget, probe, precision="float32", accuracy_table=TABLE)
        for option in found:
            assert option.passes <= 2 * max(TABLE[("airbench", option.candidate.widths, 512)])
            assert option.expected is not None  # every option offered has a prediction behind it
        p = planner.plan(budget, probe, precision="float32", accuracy_table=TABLE)
        if budget > longest:
            assert p.chosen.capped and p.chosen.seconds <= longest + 1e-6 < budget
            assert "unused" in planner.describe_option(p.chosen) and p.to_dict()["chosen"]["capped"] is True
    # the full width, measured to 8 epochs, is planned for 16 at most: its seconds are the longest budget
    full = next(s.images_per_second for s in probe.speeds if s.candidate == Candidate("airbench", FULL, 512, "float32"))
    half = next(s.images_per_second for s in probe.speeds if s.candidate == Candidate("airbench", HALF, 512, "float32"))
    steps = 98  # a full pass of 50,000 images at batch 512
    assert longest == pytest.approx(planner.STARTUP_SECONDS + max(16 * steps * 512 / full, 32 * steps * 512 / half)
                                    / planner.RUN_EFFICIENCY)


def test_the_plan_schedule_is_laid_over_exactly_the_planned_epochs(artifacts):
    p = planner.plan("15m", make_probe(2.0), precision="float32", accuracy_table=TABLE)
    assert p.config.lr_schedule == "onecycle" and p.config.lr_end_factor < p.config.lr_start_factor + 1
    assert p.config.learning_rate == pytest.approx(1.5 * p.config.batch_size / 1024)
    record = p.to_dict()
    assert record["budget_seconds"] == 900 and record["chosen"]["epochs"] == p.config.epochs
    assert len(record["runners_up"]) == len(p.runners_up) >= 1


def test_auto_precision_follows_the_probe_and_the_accuracy_ab(artifacts, bf16_ok, monkeypatch):
    worth_it, marginal = make_probe(1.0, bf16_speedup=2.0), make_probe(1.0, bf16_speedup=1.05)
    airbench = TrainConfig(architecture="airbench", widths=QUARTER, batch_size=512)
    assert probing.resolve_precision("auto", airbench, worth_it)[0] == "bfloat16"
    assert probing.resolve_precision("auto", airbench, marginal)[0] == "float32"
    assert probing.resolve_precision("auto", airbench, None)[0] == "float32"  # never probed (empty artifacts)
    assert probing.resolve_precision("float32", airbench, worth_it) == ("float32", "chosen")
    assert planner.plan("5m", worth_it, accuracy_table=TABLE).chosen.candidate.precision == "bfloat16"
    assert planner.plan("5m", marginal, accuracy_table=TABLE).chosen.candidate.precision == "float32"
    monkeypatch.setattr(table, "PRECISION_AB", {"airbench": {"float32": 0.80, "bfloat16": 0.79}})
    reason = probing.resolve_precision("auto", airbench, worth_it)
    assert reason[0] == "float32" and "lost accuracy" in reason[1]


def test_a_presets_expected_text_follows_this_machines_probe(artifacts, bf16_ok):
    slow, fast = make_probe(1.0), make_probe(4.0)
    assert "never" in planner.preset_expectation("fast", None) or "not measured" in planner.preset_expectation("fast", None)
    assert planner.preset_expectation("fast", slow) != planner.preset_expectation("fast", fast)
    assert planner.preset_expectation("fast", slow) == planner.describe_option(planner.plan(300, slow).chosen)
    slow_text = planner.preset_expectation("assignment", slow)
    assert "25 epochs at 300 img/s" in slow_text  # float32, the assignment's own precision, not bfloat16's 600
    assert "25 epochs at 1,200 img/s" in planner.preset_expectation("assignment", fast)


def test_the_accuracy_table_interpolates_in_log_epochs_and_flags_extrapolation():
    points = {("airbench", QUARTER, 512): {2: (0.70, 0.72), 8: (0.80, 0.82)}}
    mid = table.expected("airbench", QUARTER, 512, 4, points)
    assert mid.accuracy == pytest.approx(0.75) and not mid.extrapolated
    beyond = table.expected("airbench", QUARTER, 512, 16, points)  # one doubling past 8: half the last slope
    assert beyond.extrapolated and beyond.accuracy == pytest.approx(0.80 + 0.5 * 0.05)
    assert table.expected("airbench", QUARTER, 512, 17, points) is None  # further is never predicted
    assert table.max_epochs("airbench", QUARTER, 512, points) == 16
    assert table.expected("airbench", HALF, 512, 4, points) is None


# --- the probe ---------------------------------------------------------------------------------

def test_the_probe_times_real_networks_caches_and_reuses_the_result(artifacts):
    tiny = [Candidate("airbench", TINY, 32, "float32"), Candidate("airbench", TINY, 32, "bfloat16")]
    seen = []
    measured = probing.run_probe(only=tiny, on_progress=lambda done, total, label: seen.append((done, total)))
    assert seen == [(0, 2), (1, 2)]
    assert all(s.images_per_second > 0 for s in measured.speeds)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the probe's policies stayed in its thread
    cached = probing.load_probe()
    assert cached == measured and probing.probe_path().is_file()
    assert cached.machine == machine.describe() and cached.machine["keras"] == keras.__version__
    assert measured.speedup("airbench", TINY, 32, "bfloat16") > 0
    probing.probe_path().write_text("{ not json")  # a damaged cache counts as never measured
    assert probing.load_probe() is None


def test_a_probe_that_cannot_keep_its_result_says_so_before_measuring(artifacts, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(blocker))
    timed = []
    with pytest.raises(probing.ProbeError, match="cannot keep a probe"):
        probing.run_probe(only=[Candidate("airbench", TINY, 32, "float32")], timer=timed.append)
    assert timed == []


# --- budgeted runs through the CLI ---------------------------------------------------------------

def cli_run(args, capsys) -> tuple[int, str, str]:
    out = io.StringIO()
    code = cli.main(args, out=out)
    return code, out.getvalue(), capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "more than 0"),
    (["--budget", "3 parsecs"], "cannot read the budget"),
    (["--budget", "5m", "--epochs", "3"], "leave out --epochs"),
    (["--budget", "5m", "--preset", "assignment"], "fixed recipe"),
    (["--budget", "1s"], "too small for any network here: the smallest possible is about"),
])
def test_bad_budgets_get_one_line_and_create_nothing(artifacts, capsys, args, message):
    save_probe(make_probe(1.0))
    code, out, err = cli_run(["train", "--data", "synthetic", *args], capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (artifacts / "runs").exists() or not list((artifacts / "runs").iterdir())


def test_a_probe_that_cannot_run_gets_one_line(artifacts, capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(blocker))
    code, out, err = cli_run(["probe"], capsys)
    assert code == 1 and err.startswith("error: cannot keep a probe") and len(err.strip().splitlines()) == 1


def test_probe_show_prints_the_cached_speeds(artifacts, capsys):
    code, out, err = cli_run(["probe", "--show"], capsys)
    assert code == 1 and "not been probed" in err
    save_probe(make_probe(1.0))
    code, out, err = cli_run(["probe", "--show"], capsys)
    assert code == 0 and "airbench quarter width, batch 512, bfloat16" in out and "2.00x float32" in out


@pytest.mark.slow
def test_a_budgeted_run_records_its_plan_and_outcome(artifacts, capsys, bf16_ok):
    # A machine probed as very slow for full-size data: a 40 s budget plans a few epochs of 600 images.
    save_probe(make_probe(0.05))
    code, out, err = cli_run(["train", "--budget", "40s", "--data", "synthetic", "--train-subset", "600",
                              "--test-subset", "200", "--name", "budgeted"], capsys)
    assert code == 0, err
    assert "plan: airbench" in out and "budget 40 s of training" in out
    run_dir = next((artifacts / "runs").iterdir())
    recorded = json.loads((run_dir / "plan.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    assert recorded["budget_seconds"] == 40 and recorded["chosen"]["epochs"] == config["epochs"] >= 1
    assert config["preset"] == "budget" and config["precision"] == recorded["chosen"]["precision"] == "bfloat16"
    assert status["precision"]["used"] == "bfloat16"
    outcome = recorded["outcome"]
    history = json.loads((run_dir / "history.json").read_text())
    assert outcome["status"] == "completed" and outcome["epochs"] == config["epochs"]
    assert outcome["train_seconds"] == pytest.approx(history["train_seconds"][-1], abs=0.1)
    assert outcome["over_budget"] == pytest.approx(outcome["train_seconds"] / 40 - 1, abs=3e-3)  # both rounded
    assert 0 <= outcome["test_accuracy"] <= 1 and "test_accuracy_tta" in outcome
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the trainer's policy stayed in its thread
    from cifar_core import models, runs
    models.register_custom_objects()
    saved = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    full = -(-600 // config["batch_size"])
    assert int(saved.optimizer.iterations.numpy()) == config["epochs"] * (config["steps_per_epoch"] or full)
    assert recorded["chosen"]["steps_per_epoch"] == (config["steps_per_epoch"] or full)
    assert saved.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"
    run = runs.load_run(run_dir.name)
    assert run.plan["outcome"]["status"] == "completed"
