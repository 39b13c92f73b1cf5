"""How the steps execute: the distribution strategy, sums over replicas, XLA and mixed precision.

Everything here changes how a step runs, not what it computes (up to float rounding and, under
XLA, the dropout masks); the models and phases call these helpers instead of repeating them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import tensorflow as tf

from s3rec_tf.config import PRECISIONS, ConfigError

# Threads one op may use while the process pretrains (0 = TensorFlow's default, one per core).
# Pretraining's ops are small (d = 64, a few thousand positions per batch): splitting one across
# cores costs more in synchronisation than it saves, while the independent ops of a step (the
# item and segment encoder passes, their gradients) keep the cores busy side by side through the
# inter-op pool. Fine-tuning with a full softmax has one large op per step (the logits over the
# catalogue), which wants every core: a process that only fine-tunes keeps the default.
PRETRAINING_INTRA_OP_THREADS = 1


def configure_threads(intra_op: int, inter_op: int = 0) -> bool:
    """Sets TensorFlow's thread pools (0 = TensorFlow's default); call before any op runs.

    Returns False, changing nothing, when TensorFlow has already started with other settings
    (e.g. a second run in one process): the pools cannot be resized then.
    """
    threading = tf.config.threading
    wanted = (intra_op, inter_op)
    if (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    ) == wanted:
        return True
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        return False
    return True


def memory_bytes() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as f:
                total = min(total, int(f.read().strip()))
        except (OSError, ValueError):  # no such cgroup file, or "max": no limit
            continue
    return total


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named by `Config.strategy`."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """Sum of `value` over the replicas of the current strategy (itself outside a strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the real checkpoints (the only worker off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def worker_directory(directory: str, strategy: tf.distribute.Strategy) -> str:
    """Where this worker saves: every worker must save under MultiWorkerMirroredStrategy (the
    save is collective), but only the chief's copy is kept."""
    if is_chief(strategy):
        return directory
    resolver = strategy.cluster_resolver
    scratch = f"s3rec_worker_{resolver.task_type}_{resolver.task_id}"
    return os.path.join(tempfile.gettempdir(), scratch)


def check_jit_compile_devices(strategy: tf.distribute.Strategy) -> None:
    """Refuses XLA with several CPU replicas in one worker, before data and model are set up.

    XLA compiles each step for one CPU device, which cannot reach the variables of the other CPU
    replicas of the same worker: the first jit-compiled step would fail. (One CPU replica per
    worker, as under multi_worker, and GPU replicas are not affected.)
    """
    if tf.config.list_logical_devices("GPU"):
        return
    local_devices = len(strategy.extended.worker_devices)
    if local_devices > 1:
        raise ConfigError(
            f"jit_compile with {local_devices} CPU replicas: XLA cannot reach "
            "variables on other CPU devices (https://www.tensorflow.org/xla/known_issues"
            "#tfvariable_on_a_different_device). Drop --jit_compile, or run the replicas on GPUs."
        )


@contextlib.contextmanager
def seeded_dropout():
    """Layers built inside draw their dropout masks from seeded tf.random.Generator states.

    Keras 2 dropout otherwise draws from TF1 stateful random ops. Their state lives in the op
    kernels: no checkpoint can hold it, so a run resumed at epoch k would draw other masks than
    the uninterrupted run, and XLA ignores their seeds ("Using tf.random.uniform with XLA
    compilation will ignore seeds"). A generator's state is a variable: ResumableTraining
    checkpoints it with the model (`dropout_generators`), and XLA honours it.
    """
    experimental = tf.keras.backend.experimental
    if experimental.is_tf_random_generator_enabled():
        yield
        return
    experimental.enable_tf_random_generator()
    try:
        yield
    finally:
        experimental.disable_tf_random_generator()


@contextlib.contextmanager
def precision_policy(precision: str):
    """Sets the Keras global dtype policy for the models built inside; restores it on leaving.

    "off" keeps float32. Under "mixed_float16" / "mixed_bfloat16" layers compute in 16 bits and
    keep float32 variables; the models cast logits to float32 before losses and metrics.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"mixed_precision must be one of {PRECISIONS}, not {precision!r}.")
    mixed_precision = tf.keras.mixed_precision
    before = mixed_precision.global_policy()
    if precision != "off":
        mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        mixed_precision.set_global_policy(before)


# Variables with at least this many elements (a 65,536 x 64 item table) are updated by
# `InPlaceAdam`'s fused kernel; smaller ones by Keras's own Adam, whose numbers the tests pin.
IN_PLACE_ADAM_MIN_ELEMENTS = 1 << 22


class InPlaceAdam(tf.keras.optimizers.Adam):
    """Keras's Adam whose update of a large variable is one in-place kernel.

    Keras's Adam updates a variable through whole-size temporaries: for an item table's sparse
    gradient it decays both slots (`m.assign_add(-m * (1 - beta_1))`, the same for v) and then
    computes `(m * alpha) / (sqrt(v) + epsilon)`: several `[N + 2, d]` tensors per step (at a
    million items, 256 MB each), and as many passes over memory. Here a variable of at least
    `min_elements` gets the same update from TensorFlow's `ResourceApplyAdam` kernel, which
    changes var, m and v in place, after the sparse gradient is summed into one dense
    `[N + 2, d]` tensor (Keras's update leaves no row out either: every row's slots decay). Same
    arithmetic, up to float rounding; Adam's defaults only (no amsgrad).

    Args:
      learning_rate: as Keras's Adam.
      min_elements: the size from which the in-place kernel is used.
      **kwargs: passed to Keras's Adam.
    """

    def __init__(self, learning_rate=0.001, min_elements=IN_PLACE_ADAM_MIN_ELEMENTS, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if self.amsgrad:
            raise ValueError("InPlaceAdam does not implement amsgrad.")
        self.min_elements = min_elements

    def update_step(self, gradient, variable):
        if variable.shape.num_elements() < self.min_elements:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        if isinstance(gradient, tf.IndexedSlices):
            rows = tf.shape(variable, out_type=gradient.indices.dtype)[0]
            gradient = tf.math.unsorted_segment_sum(gradient.values, gradient.indices, rows)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(self.learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=gradient,
        )

    def get_config(self):
        return {**super().get_config(), "min_elements": self.min_elements}


def adam(learning_rate: float) -> tf.keras.optimizers.Optimizer:
    """`InPlaceAdam`, wrapped in a LossScaleOptimizer under a float16 policy (the train steps go
    through `optimizer.minimize`, which scales the loss and unscales the gradients)."""
    optimizer = InPlaceAdam(learning_rate)
    if tf.keras.mixed_precision.global_policy().compute_dtype == "float16":
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def compile_for_training(
    model: tf.keras.Model, learning_rate: float, jit_compile: bool = False
) -> None:
    """Compiles a built model with `adam(learning_rate)` and creates the optimizer's slots now.

    Left to the first step, the slots would be created inside the traced train function, and a
    tf.function that creates variables is traced a second time: the whole train step again
    (about a quarter of a short run's time). Made here, under the caller's strategy scope, they
    also exist before a checkpoint is restored into them.
    """
    model.compile(optimizer=adam(learning_rate), jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)
