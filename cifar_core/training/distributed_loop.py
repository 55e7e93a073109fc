"""The distributed train and validation loop for where model.fit does not work under a strategy
(MultiWorkerMirroredStrategy: keras-team/keras#20585). It calls the Keras callbacks in fit's
order with fit's logs, so live progress, checkpoints, stop and the recipe's callbacks behave the
same whichever loop trained.
"""
from __future__ import annotations

from typing import Any

from cifar_core.training.progress import StopRequested

# The fewest images of a training batch a replica trains on. BatchNorm normalises each replica's
# share with that share's own moments: one image makes them degenerate (variance 0: the output is
# the shift alone, and the moving variance is pulled towards 0), none makes them undefined (and
# TensorFlow's CPU kernels fail on an empty share, BatchNorm or not). So the loop skips a training
# batch that would leave a replica fewer images: only a pass's last, partial batch can (a smaller
# global batch is refused: distributed.Cluster.check), and its images train in the other epochs,
# reshuffled into full batches. A validation batch is never skipped: one smaller than the replica
# count is padded to one image per replica, the padding weighted 0 (inference uses no batch
# statistics). One replica (one device) trains every batch it is given, as Keras' fit does; a training
# dataset leaves out a last batch of fewer than MIN_SHARE_IMAGES (training.make_tf_dataset).
MIN_SHARE_IMAGES = 2


def trains_batch(images: int, replicas: int) -> bool:
    """Whether the loop trains a batch of `images` over `replicas` (see MIN_SHARE_IMAGES)."""
    return replicas == 1 or images // replicas >= MIN_SHARE_IMAGES


class _EpochSums:
    """Running sums of per-image loss and correct predictions: the means Keras' metrics report."""

    def __init__(self) -> None:
        self.loss = self.correct = 0.0
        self.images = 0

    def add(self, loss_sum, correct, images: int) -> None:
        self.loss += float(loss_sum)
        self.correct += float(correct)
        self.images += images

    def logs(self, prefix: str = "") -> dict[str, float]:
        n = max(1, self.images)
        return {f"{prefix}loss": self.loss / n, f"{prefix}accuracy": self.correct / n}


class Loop:
    """One model's training under one strategy: the compiled steps, and fit's callback protocol.

    A stop raised by a callback (the live one raises StopRequested when the job is asked to stop)
    is held, not raised, while other workers may still be stepping: every worker all-reduces its
    stop flag before each step and all leave together, since a worker that left alone would
    leave the others waiting in the next collective."""

    def __init__(self, model: Any, strategy: Any, label_smoothing: float, agree_on_stop: bool):
        import keras
        import tensorflow as tf

        self.model, self.strategy = model, strategy
        if not model.optimizer.built:  # (a resumed model's are loaded) its slots now, under the strategy:
            with strategy.scope():  # not lazily inside the compiled step, which cannot create them there
                model.optimizer.build(model.trainable_weights)
        self._stop_pending = False
        total = tf.distribute.ReduceOp.SUM

        def per_image(labels, probabilities):
            return keras.losses.categorical_crossentropy(labels, probabilities, label_smoothing=label_smoothing)

        def correct(labels, probabilities, weights=1.0):
            hits = tf.equal(tf.argmax(labels, axis=-1), tf.argmax(probabilities, axis=-1))
            return tf.reduce_sum(tf.cast(hits, tf.float32) * weights)

        def train_replica(x, y, images):
            with tf.GradientTape() as tape:
                p = model(x, training=True)
                losses = per_image(y, p)
                # summed over this replica, divided by the whole step's images: the optimizer sums the
                # replicas' gradients, so the update is the one of the global batch's mean loss
                loss = tf.reduce_sum(losses) / images
            weights = model.trainable_weights
            model.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            return tf.reduce_sum(losses), correct(y, p)

        def validate_replica(x, y, weights):  # weights: 0 for the padding of a batch smaller than the replicas
            p = model(x, training=False)
            return tf.reduce_sum(per_image(y, p) * weights), correct(y, p, weights)

        @tf.function(reduce_retracing=True)
        def train_step(x, y, images):
            sums = strategy.run(train_replica, args=(x, y, images))
            return [strategy.reduce(total, s, axis=None) for s in sums]

        @tf.function(reduce_retracing=True)
        def validate_step(x, y, weights):
            return [strategy.reduce(total, s, axis=None) for s in strategy.run(validate_replica, args=(x, y, weights))]

        @tf.function
        def agree(flag):
            return strategy.reduce(total, strategy.run(lambda: tf.identity(flag)), axis=None)

        self._train_step, self._validate_step = train_step, validate_step
        self._agree = agree if agree_on_stop else None

    def _call(self, hook, *args) -> None:
        """A callback hook; a stop it raises waits for the workers' agreement (see the class)."""
        try:
            hook(*args)
        except StopRequested:
            if self._agree is None:
                raise
            self._stop_pending = True

    def _check_stop(self) -> None:
        if self._agree is not None and float(self._agree(1.0 if self._stop_pending else 0.0)) > 0:
            raise StopRequested()

    def _shares(self, ds, validation: bool = False):
        """Each global batch of `ds` (iterated as one device iterates it: the same batches, the
        same reshuffle every epoch, on every worker) as the replicas' contiguous shares of (x, y),
        and of the images' weights when `validation`, with its number of images. Not
        experimental_distribute_dataset: its per-epoch reshuffle differs from the undistributed
        pipeline's, so its second epoch would not be one device's.

        No replica gets an empty or too small share (MIN_SHARE_IMAGES): a training batch
        that would leave one so is skipped (every worker skips the same one), and a validation
        batch smaller than the replica count is padded with copies of its last image, weighted 0."""
        import tensorflow as tf

        replicas = self.strategy.num_replicas_in_sync
        for x, y in ds:
            n = int(x.shape[0])
            if not validation and not trains_batch(n, replicas):
                continue  # a pass's last batch, too small to share: its images train in other epochs
            parts = (x, y)
            if validation:
                pad = max(0, replicas - n)
                if pad:
                    parts = tuple(tf.concat([t, tf.repeat(t[-1:], pad, axis=0)], 0) for t in parts)
                parts += (tf.concat([tf.ones([n]), tf.zeros([pad])], 0),)
            m = int(parts[0].shape[0])

            def share(context, parts=parts, m=m):
                i = context.replica_id_in_sync_group
                return tuple(t[i * m // replicas:(i + 1) * m // replicas] for t in parts)

            yield self.strategy.experimental_distribute_values_from_function(share), n

    def fit(self, train_ds, val_ds, callbacks: list, *, epochs: int, initial_epoch: int, steps: int,
            validate_last_epoch: bool = True) -> None:
        """Train epochs initial_epoch..epochs-1 with validation after each, as model.fit does;
        `steps`: batches per epoch (for the callbacks' params). Without `validate_last_epoch` the
        last epoch is not validated here (the live callback validates it itself, as under fit)."""
        import keras
        import tensorflow as tf

        model = self.model
        hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps, verbose=0)
        model.stop_training = False
        hooks.on_train_begin()
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            hooks.on_epoch_begin(epoch)
            sums = _EpochSums()
            for step, ((x, y), images) in enumerate(self._shares(train_ds)):
                if step >= steps:  # a plan's shorter epoch (TrainConfig.steps_per_epoch)
                    break
                self._check_stop()
                hooks.on_train_batch_begin(step)
                sums.add(*self._train_step(x, y, tf.constant(images, tf.float32)), images)
                self._call(hooks.on_train_batch_end, step, sums.logs())
                if model.stop_training:
                    break
            logs = sums.logs()
            # Keras' epoch iterator opens one more iterator at each epoch's end, and a fresh one for the
            # next epoch: the reshuffle advances twice per epoch. Doing the same keeps every epoch's
            # batches the ones one device's fit trains on.
            iter(train_ds)
            if validate_last_epoch or epoch + 1 < epochs:
                logs.update(self._validate(val_ds, hooks))
            hooks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        model.optimizer.finalize_variable_values(model.trainable_weights)  # EMA weights swapped in, as fit does
        hooks.on_train_end(logs)

    def _validate(self, val_ds, hooks) -> dict[str, float]:
        """One pass over the validation batches, every worker its share; the val_ logs."""
        self._call(hooks.on_test_begin)
        val = _EpochSums()
        for step, ((x, y, weights), images) in enumerate(self._shares(val_ds, validation=True)):
            self._check_stop()
            hooks.on_test_batch_begin(step)
            val.add(*self._validate_step(x, y, weights), images)
            self._call(hooks.on_test_batch_end, step, val.logs())
        self._check_stop()
        hooks.on_test_end(val.logs())
        return val.logs("val_")
