"""Where a job trains: one device, several devices of this machine (MirroredStrategy) or several
machines (MultiWorkerMirroredStrategy from TF_CONFIG); the process-wide strategy, which worker
writes the run folder, and the model built and trained under the strategy.

Importing this module does not import TensorFlow; `setup` does, once per process.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.training.distributed_loop import MIN_SHARE_IMAGES, trains_batch  # the loop's rule, no TensorFlow

# Which loop trains in one process: unset, our loop under MirroredStrategy and Keras' fit otherwise;
# "custom" or "fit" chooses (multi-worker always takes ours). Keras 3.15's fit under MirroredStrategy
# does not take one device's steps: on 2 logical CPUs, from the same weights on the same 4 batches,
# it moved the first kernel ~80x further than one device's fit (and logged another first loss),
# while our loop matched one device to 6 digits. "fit" rechecks a later Keras; "custom" runs our
# loop on one device (tests compare it with fit).
LOOP_ENV = "CIFAR_DISTRIBUTED_LOOP"
SCRATCH_PREFIX = "cifar-worker-"  # a non-chief worker's throwaway run folder, removed when it ends
LR_RULE = ("none: batch_size is the global batch (all replicas together) and the learning rate is "
           "the recipe's for that batch, so neither changes with the number of replicas")


class WorkerLost(RuntimeError):
    """A peer of a multi-worker job stopped (killed, crashed or unreachable)."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process trains: its strategy, its replicas, and its place in a cluster."""

    strategy: str = "default"  # default | one_device | mirrored | multi_worker
    devices: tuple[str, ...] = ()  # this process's replica devices, e.g. ("GPU:0", "GPU:1"); () for TF's choice
    num_workers: int = 1  # processes training together (TF_CONFIG's chief + workers)
    task: str = ""  # "worker:1" etc. in a cluster
    is_chief: bool = True  # only the chief writes the run folder

    @property
    def replicas(self) -> int:
        """Replicas in sync: every device of every worker (each worker has the same count)."""
        return max(1, len(self.devices)) * self.num_workers

    @property
    def custom_loop(self) -> bool:
        """Our loop where model.fit does not work: it fails under MultiWorkerMirroredStrategy
        (keras-team/keras#20585) and takes other steps than one device under MirroredStrategy."""
        choice = os.environ.get(LOOP_ENV, "")
        if self.strategy == "multi_worker" or choice not in ("custom", "fit"):
            return self.strategy in ("multi_worker", "mirrored")
        return choice == "custom"

    def record(self, config: TrainConfig) -> dict[str, Any]:
        """What status.json says about this session's distribution (a resume records its own)."""
        return {"strategy": self.strategy, "replicas": self.replicas, "workers": self.num_workers,
                "devices": list(self.devices), "loop": "custom" if self.custom_loop else "fit",
                "global_batch_size": config.batch_size, "per_replica_batch_size": config.batch_size // self.replicas,
                "learning_rate": config.learning_rate, "learning_rate_scaling": LR_RULE}

    def batches_per_pass(self, images: int, batch_size: int) -> int:
        """Training steps in one pass over `images`: the last, partial batch only if it is trained.
        A partial batch of fewer than MIN_SHARE_IMAGES is never trained, on one device either (a
        single image's BatchNorm statistics are its own values: make_tf_dataset leaves it out); under
        our loop one too small to share over the replicas is skipped as well."""
        full, rest = divmod(images, batch_size)
        return full + bool(rest >= MIN_SHARE_IMAGES and (not self.custom_loop or trains_batch(rest, self.replicas)))

    def check(self, config: TrainConfig) -> None:
        """Refuse a batch that does not split evenly over the replicas, or leaves a replica fewer
        than MIN_SHARE_IMAGES training images every step, before anything is written."""
        if config.batch_size % self.replicas:
            raise ValueError(f"batch_size {config.batch_size} (the global batch) does not split evenly over "
                             f"{self.replicas} replicas; choose a multiple of {self.replicas}")
        step = min(config.batch_size, config.train_subset or config.batch_size)  # the most images one step has
        what = "batch_size" if step == config.batch_size else "train_subset"
        if step < config.batch_size and step < MIN_SHARE_IMAGES:  # its one, partial batch is left out
            raise ValueError(f"train_subset {step} is a single partial batch of fewer than {MIN_SHARE_IMAGES} "
                             f"images, which is not trained (BatchNorm needs {MIN_SHARE_IMAGES}); choose at least "
                             f"{MIN_SHARE_IMAGES}")
        if not trains_batch(step, self.replicas):
            raise ValueError(f"{what} {step} leaves each of {self.replicas} replicas fewer than {MIN_SHARE_IMAGES} "
                             f"training images a step (BatchNorm needs {MIN_SHARE_IMAGES}); choose at least "
                             f"{MIN_SHARE_IMAGES * self.replicas}")


LOCAL = Cluster()
_cluster: Optional[Cluster] = None
_strategy: Any = None


def read_tf_config(environ: Optional[dict[str, str]] = None) -> Optional[tuple[int, str, bool]]:
    """(workers, task, is_chief) from TF_CONFIG when it describes a cluster of two or more tasks,
    else None. The chief is task "chief", or "worker" 0 where the cluster names no chief."""
    text = (environ if environ is not None else os.environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        spec = json.loads(text)
        jobs = {name: list(tasks) for name, tasks in spec["cluster"].items() if name in ("chief", "worker")}
        kind, index = spec["task"]["type"], int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"TF_CONFIG is not a cluster description: {exc}") from exc
    workers = sum(len(tasks) for tasks in jobs.values())
    if kind not in jobs or not 0 <= index < len(jobs[kind]):
        raise ValueError(f"TF_CONFIG's task {kind}:{index} is not in its cluster")
    if workers < 2:
        return None
    return workers, f"{kind}:{index}", kind == "chief" or (kind == "worker" and index == 0 and "chief" not in jobs)


def parse_devices(spec: Optional[str]) -> tuple[str, Optional[int], tuple[int, ...]]:
    """'default' | 'cpu' | 'cpu:N' (N logical CPUs) | 'gpu' (every GPU) | 'gpu:0,1' -> (kind, count, ids)."""
    text = (spec or "default").strip().lower()
    m = re.fullmatch(r"(default|cpu|gpu)(?::([0-9]+(?:,[0-9]+)*))?", text)
    if not m or (m.group(1) == "default" and m.group(2)):
        raise ValueError(f"devices must be default, cpu, cpu:N, gpu or gpu:I,J..., got {spec!r}")
    numbers = tuple(int(v) for v in (m.group(2) or "").split(",") if v)
    if m.group(1) == "cpu":
        if len(numbers) > 1 or (numbers and not 1 <= numbers[0] <= 64):
            raise ValueError(f"cpu:N takes one count from 1 to 64, got {spec!r}")
        return "cpu", numbers[0] if numbers else 1, ()
    return m.group(1), None, numbers


def setup(devices: Optional[str] = None) -> Cluster:
    """Create this process's strategy: multi-worker when TF_CONFIG describes a cluster, else from
    `devices`. Call once, before TensorFlow initialises its devices (logical CPUs must be
    configured first); a multi-worker setup waits here until every worker has started."""
    global _cluster, _strategy
    if _cluster is not None:
        raise RuntimeError("the distribution strategy is set up once per process")
    kind, count, ids = parse_devices(devices)
    in_cluster = read_tf_config()
    import tensorflow as tf

    if in_cluster:
        if kind != "default":
            raise ValueError("with TF_CONFIG each worker trains on all its GPUs (or its CPU); choose a "
                             "worker's GPUs with CUDA_VISIBLE_DEVICES, not --devices")
        workers, task, chief = in_cluster
        _strategy = tf.distribute.MultiWorkerMirroredStrategy()
        local = tuple(d.split("/device:")[-1] for d in _strategy.extended.worker_devices)
        _cluster = Cluster("multi_worker", local, workers, task, chief)
        return _cluster
    if kind == "default":
        _cluster, _strategy = LOCAL, tf.distribute.get_strategy()
        return _cluster
    if kind == "cpu":
        cpus = tf.config.list_physical_devices("CPU")
        if count > 1:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
        names = tuple(f"CPU:{i}" for i in range(count))
    else:
        found = tf.config.list_physical_devices("GPU")
        if not found:
            raise ValueError("no GPU is visible to TensorFlow; train with --devices default or cpu")
        missing = [i for i in ids if i >= len(found)]
        if missing:
            raise ValueError(f"GPU {missing[0]} does not exist; this machine shows {len(found)} GPU(s)")
        names = tuple(f"GPU:{i}" for i in (ids or range(len(found))))
    if len(names) == 1:
        _strategy, _cluster = tf.distribute.OneDeviceStrategy(f"/{names[0]}"), Cluster("one_device", names)
    else:
        _strategy = tf.distribute.MirroredStrategy([f"/{n}" for n in names])
        _cluster = Cluster("mirrored", names)
    return _cluster


def current() -> Cluster:
    """This process's cluster: LOCAL (TF's default strategy) unless `setup` chose another."""
    return _cluster or LOCAL


def strategy():
    import tensorflow as tf

    return _strategy if _strategy is not None else tf.distribute.get_strategy()


# --- the run folder: only the chief writes it -------------------------------------------------

def create_run(config: TrainConfig, name: str = "", tags: Any = ()) -> Path:
    """The run folder this process trains into: the chief's new run folder (runs.create_run), or
    a non-chief worker's scratch one; a batch the replicas cannot share is refused first."""
    current().check(config)
    return runs.create_run(config, name=name, tags=tags) if current().is_chief else scratch_run(config)


def scratch_run(config: TrainConfig) -> Path:
    """A non-chief worker's run folder: a throwaway one outside the artifacts (the chief's run
    folder and CIFAR_ARTIFACTS_DIR are never touched); `remove_scratch` deletes it at the end."""
    path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX)) / "run"
    path.mkdir()
    runs.write_json(path / "config.json", config.to_dict())
    runs.write_json(path / "status.json", {"status": "running", "epochs_done": 0})
    return path


def remove_scratch(run_dir: Path) -> None:
    if run_dir.parent.name.startswith(SCRATCH_PREFIX):
        shutil.rmtree(run_dir.parent, ignore_errors=True)


def worker_resume(run_id: str, epochs: Optional[int] = None) -> dict[str, Any]:
    """A non-chief worker's part of a resume, as TrainingJob arguments: the chief's run folder is
    read, never written (it must be on storage every worker reads), and its checkpoint copied to
    the worker's scratch folder before the first step, so the chief's next checkpoint cannot
    change it underneath (the chief writes none before every worker has stepped)."""
    run = runs.load_run(run_id)
    if run.broken or run.config is None:
        raise runs.RunError(f"run {run_id} is broken ({run.broken}) and cannot be resumed")
    config = run.config if epochs is None else run.config.replace(epochs=epochs)
    if run.epochs_done >= config.epochs:
        raise runs.RunError(f"run {run_id} already has {run.epochs_done} of {config.epochs} epochs; ask for more epochs")
    scratch = scratch_run(config)
    for name in ("checkpoint.keras", "model.keras"):  # the chief may be renaming one into the other
        try:
            shutil.copyfile(run.path / name, scratch / "resume.keras")
        except FileNotFoundError:
            continue
        history = {k: v[:run.epochs_done] for k, v in run.history.items()}
        _copy_lookahead_state(run.path, scratch)
        return dict(config=config, run_dir=scratch, history=history, initial_epoch=run.epochs_done,
                    resume_from=scratch / "resume.keras")
    remove_scratch(scratch)
    raise runs.RunError(f"run {run_id} has no checkpoint this worker can read in {run.path}; a worker resumes "
                        f"from the chief's run folder, so CIFAR_ARTIFACTS_DIR must be storage every worker reads")


def _copy_lookahead_state(run_dir: Path, scratch: Path) -> None:
    """Lookahead's slow weights beside the chief's checkpoint, for this worker's resume to start from
    the same ones as the chief (its step is checked against the checkpoint's when read)."""
    from cifar_core.recipes import LOOKAHEAD_FILE

    try:
        shutil.copyfile(run_dir / LOOKAHEAD_FILE, scratch / LOOKAHEAD_FILE)
    except FileNotFoundError:
        pass  # not a lookahead run, or one from before the slow weights were saved


# --- the model and its training under the strategy ----------------------------------------------

def build_model(config: TrainConfig, x_train, steps_per_epoch: int, resume_from: Optional[Path] = None):
    """The config's compiled model, or the checkpoint's (its optimizer state and schedule step
    included), with its variables created under this process's strategy."""
    import keras

    from cifar_core import models
    from cifar_core.recipes import make_schedule

    with strategy().scope():
        if resume_from is None:
            return models.build_model(config, x_train=x_train, steps_per_epoch=steps_per_epoch)
        # compile=True restores the optimizer's state and its schedule's step with the weights
        models.register_custom_objects()
        model = keras.saving.load_model(resume_from, safe_mode=True)
        if config.lr_schedule != "constant" or config.warmup_epochs:
            # an extended run re-plans its schedule over the new length; the step count carries on
            model.optimizer.learning_rate = make_schedule(config, steps_per_epoch)
        return model


def train(model, cluster: Cluster, train_ds, val_ds, callbacks: list, config: TrainConfig, *, initial_epoch: int,
          steps_per_epoch: int, validate_last_epoch: bool = True) -> None:
    """model.fit, or the custom loop where fit does not work; either drives the same callbacks.
    Raises progress.StopRequested when a stop ended training (on every worker at the same step)."""
    if not cluster.custom_loop:
        model.fit(train_ds, epochs=config.epochs, initial_epoch=initial_epoch, validation_data=val_ds,
                  validation_freq=1 if validate_last_epoch else list(range(1, config.epochs)),
                  # fewer steps than a pass: Keras carries the iterator on into the next epoch
                  steps_per_epoch=config.steps_per_epoch and steps_per_epoch,
                  callbacks=callbacks, verbose=0, shuffle=False)  # tf.data shuffles
        return
    import tensorflow as tf

    from cifar_core.training.distributed_loop import Loop

    loop = Loop(model, strategy(), config.label_smoothing, agree_on_stop=cluster.num_workers > 1)
    try:
        loop.fit(train_ds, val_ds, callbacks, epochs=config.epochs, initial_epoch=initial_epoch, steps=steps_per_epoch,
                 validate_last_epoch=validate_last_epoch)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError) as exc:
        raise WorkerLost(describe_lost_peer(exc, cluster.task)) from exc


def describe_lost_peer(exc: BaseException, own_task: str = "") -> str:
    """A collective that failed because a peer went away, said for people: which task (not this
    one, which TensorFlow's message names too) and how it was noticed."""
    text = str(exc)
    tasks = sorted({f"{job}:{index}" for job, index in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", text)}
                   - {own_task})
    how = "it stopped sending heartbeats" if "heartbeat" in text else text.strip().splitlines()[0][:160]
    return (f"training stopped because {', '.join(tasks) or 'a peer'} of the cluster stopped responding ({how}: "
            f"killed, crashed or unreachable); the run keeps its last completed epoch's checkpoint: resume it "
            f"on one machine, or on the whole cluster again")


def evaluation_model(model, saved: Path):
    """The model to evaluate on one process: under a strategy Keras' predict concatenates the
    replicas' outputs (twice the rows under MirroredStrategy, an all-gather that waits for every
    worker under MultiWorkerMirroredStrategy), so the chief evaluates the file it saved instead."""
    if current().strategy == "default":
        return model
    import keras

    from cifar_core.models import register_custom_objects

    register_custom_objects()
    return keras.saving.load_model(saved, safe_mode=True, compile=False)


def on_one_device(callback, config: TrainConfig, x_train):
    """`callback` itself under TF's default strategy; under another, a stand-in that shows it a
    one-device copy of the model, given the trained weights before each epoch's end. For callbacks
    that predict (the evolution sample): Keras' predict on a distributed model returns every
    replica's rows (MirroredStrategy) or waits for every worker (multi-worker)."""
    if current().strategy == "default":
        return callback
    import keras

    from cifar_core.models import build_network

    copy = build_network(config, x_train)  # here, outside the strategy's scope: plain variables

    class OnOneDevice(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            callback.set_model(copy)
            callback.on_train_begin(logs)

        def on_epoch_begin(self, epoch, logs=None):
            callback.on_epoch_begin(epoch, logs)

        def on_epoch_end(self, epoch, logs=None):
            copy.set_weights(self.model.get_weights())
            callback.on_epoch_end(epoch, logs)

        def on_train_end(self, logs=None):
            callback.on_train_end(logs)

    return OnOneDevice()
