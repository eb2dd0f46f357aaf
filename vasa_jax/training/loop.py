"""The training loop every stage runs: sharded state, jitted step, metrics, checkpoints, NaN stop.

A stage gives the loop a `Task`; the loop
  1. derives the state's shapes with `jax.eval_shape` and its shardings from the logical axis
     names the modules put on their parameters (`config.sharding_rules`);
  2. restores the newest checkpoint in `<workdir>/checkpoints` (state and data iterator), or
     initialises the state directly into its shardings;
  3. runs `train_step` jitted with the state donated, with per-step RNG `fold_in(rng, step)`;
  4. writes averaged metrics every `log_every_steps` (CLU writers, TensorBoard + log, process 0
     only), calls the stage's `evaluate` every `eval_every_steps`, checkpoints every
     `checkpoint_every_steps`, at the end and on SIGTERM; and stops with a clear error when a
     metric stops being finite.

What process 0 shows: one line before the first step (the train step is being compiled) and
one after it (how long that took); then a progress bar (step, steps/s, ETA and the stage's
`progress_metrics` as of the last log). Every scalar also goes to `<workdir>/metrics.json`
(`run_metrics`), which inference reads to warn about undertrained checkpoints. A run whose
newest checkpoint is already at `total_steps` says there is nothing to do and returns it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from jax.sharding import Mesh, NamedSharding

from vasa_jax.data import input_pipeline
from vasa_jax.training import checkpoint as checkpoint_lib
from vasa_jax.training import run_metrics
from vasa_jax.training import sharding as sharding_lib

if TYPE_CHECKING:
  from clu import metric_writers


@dataclasses.dataclass(frozen=True)
class Task:
  """What a stage hands the loop.

  init_state: rng -> the initial train state: a pytree whose parameters carry logical axis names
    (`nn.Partitioned` boxes; unnamed leaves are replicated) and that has a scalar `step` field.
  train_step: (state, global batch, rng, frozen) -> (new state, {name: scalar}); pure, jitted by
    the loop.
  train_iterator: a Grain iterator of this process's numpy batches (checkpointed with the state).
  frozen: arrays the step reads but never trains (pretrained perceptual networks), replicated
    on every device and passed to `train_step` as an argument rather than baked into the
    compiled program as constants; not checkpointed.
  evaluate: optional (state, step, writer) -> None, for held-out metrics and image grids;
    `writer` writes on process 0 only.
  progress_metrics: names of the metrics shown in the progress bar and kept as a history in
    metrics.json, the main loss first (`run_metrics` checks whether it is still falling).
  """
  init_state: Callable[[jax.Array], Any]
  train_step: Callable[[Any, Any, jax.Array, Any], tuple[Any, Mapping[str, jax.Array]]]
  train_iterator: grain.DatasetIterator
  frozen: Any = None
  evaluate: Optional[Callable[[Any, int, metric_writers.MetricWriter], None]] = None
  progress_metrics: tuple[str, ...] = ("loss",)


class NonFiniteLossError(FloatingPointError):
  """A training metric became NaN or infinite."""


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + log writer on process 0; the other processes only log."""
  # Imported here: CLU's TensorBoard writer loads TensorFlow (seconds), which a run that stops
  # at a config or data error never needs.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  return metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=False)


class _RecordingWriter:
  """Forwards to a metric writer and adds every scalar it writes to a `MetricsRecord`."""

  def __init__(self, writer: metric_writers.MetricWriter,
               record: Optional[run_metrics.MetricsRecord]):
    self._writer = writer
    self._record = record

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._writer.write_scalars(step, scalars)
    if self._record is not None:
      self._record.add(step, scalars)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._writer, name)


def nothing_to_do(workdir: str, step: int, total_steps: int) -> str:
  """The line a finished run's rerun logs."""
  return (f"nothing to do: {workdir} is already at step {step} of {total_steps} (raise "
          "--config.total_steps to train on, or use another --workdir)")


def progress_text(scalars: Mapping[str, float], names: tuple[str, ...]) -> str:
  """The progress bar's text: name=value for each of `names` present in `scalars`."""
  return ", ".join(f"{name}={scalars[name]:.4g}" for name in names if name in scalars)


def _above(progress: Optional[tqdm.tqdm]):
  """A context in which log lines print above the progress bar rather than into it."""
  return progress.external_write_mode() if progress is not None else contextlib.nullcontext()


def check_finite(metrics: Mapping[str, float], step: int, checkpointer_dir: str,
                 last_saved_step: Optional[int]) -> None:
  bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
  if bad:
    resume = (f"the last good checkpoint is step {last_saved_step} in {checkpointer_dir}"
              if last_saved_step is not None else "no checkpoint was saved yet")
    raise NonFiniteLossError(
        f"training stopped at step {step}: {bad} is not finite (try a lower learning rate, "
        f"gradient clipping or float32 compute); {resume}")


@dataclasses.dataclass
class _MetricAverager:
  """Averages per-step device scalars over a logging interval without syncing every step."""
  pending: list = dataclasses.field(default_factory=list)

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self.pending.append(metrics)

  def result(self) -> dict[str, float]:
    stacked = jax.device_get(self.pending)
    self.pending = []
    return {name: float(np.mean([m[name] for m in stacked])) for name in stacked[0]}


def root_rng(config: Any) -> jax.Array:
  """The run's root key: `config.seed` with the PRNG implementation `config.prng_impl`."""
  return jax.random.key(config.seed, impl=config.prng_impl)


def check_batch_size(config: Any, mesh: Mesh) -> None:
  """The global batch must split evenly over the mesh's batch axes and the processes."""
  batch_axes = dict(config.sharding_rules).get("batch") or ()
  batch_axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes)
  ways = math.prod(mesh.shape[axis] for axis in batch_axes)
  if config.batch_size % ways or config.batch_size % jax.process_count():
    raise ValueError(
        f"config.batch_size={config.batch_size} does not split over the {ways} batch shards of "
        f"the mesh {dict(mesh.shape)} and {jax.process_count()} process(es)")


def initial_state(task: Task, config: Any, mesh: Mesh) -> tuple[Any, Any, Any]:
  """(abstract unboxed state with shardings, state shardings, init fn jitted into them)."""
  init_rng = jax.random.fold_in(root_rng(config), 0)
  abstract_boxed = jax.eval_shape(task.init_state, init_rng)
  shardings = sharding_lib.state_shardings(abstract_boxed, mesh, config.sharding_rules)
  abstract = sharding_lib.abstract_state(abstract_boxed, shardings)
  init_fn = jax.jit(lambda rng: nn.meta.unbox(task.init_state(rng)), out_shardings=shardings)
  return abstract, shardings, lambda: init_fn(init_rng)


def jit_train_step(train_step: Callable, shardings: Any, data_sharding: NamedSharding,
                   rules: Sequence[tuple[str, Any]]) -> Callable:
  """`train_step` jitted as the loop runs it: state in and out in `shardings` (donated), the
  batch in `data_sharding`, rng and frozen arrays as given (frozen ones replicated), metrics
  replicated (every process can read them).

  The step is traced under the logical axis `rules` and the batch's mesh, so that the modules'
  activation constraints (`sharding.constrain_activation`) keep activations split along the
  batch.
  """
  mesh = data_sharding.mesh

  def step_under_rules(*args):
    with (jax.sharding.use_abstract_mesh(mesh.abstract_mesh),
          sharding_lib.activation_rules(rules)):
      return train_step(*args)

  return jax.jit(step_under_rules, in_shardings=(shardings, data_sharding, None, None),
                 out_shardings=(shardings, sharding_lib.replicated(mesh)), donate_argnums=0)


# How long a process that has compiled the train step waits for the others (compile times
# differ between hosts; a paper-size model compiles in minutes).
COMPILE_BARRIER_TIMEOUT_S = 3600


def wait_for_every_process(name: str) -> None:
  """A barrier over the processes of JAX's distributed runtime (nothing with one process).

  Run after compiling: the first step's collectives give up on a process that is still compiling
  (gloo on CPUs after 30 s), the runtime's barrier waits up to COMPILE_BARRIER_TIMEOUT_S.
  """
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(name, timeout=COMPILE_BARRIER_TIMEOUT_S,
                                        processes=set(range(jax.process_count())))


def train(config: Any, workdir: str, task: Task, mesh: Mesh) -> Any:
  """Trains to `config.total_steps` (resuming from `workdir`) and returns the final state."""
  check_batch_size(config, mesh)
  os.makedirs(workdir, exist_ok=True)
  main_process = jax.process_index() == 0
  if main_process:
    checkpoint_lib.write_config(workdir, config)
  abstract, shardings, init_fn = initial_state(task, config, mesh)
  logging.info("train state: %s parameters and optimiser values",
               f"{sharding_lib.parameter_count(abstract):,}")
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints,
      save_interval_steps=config.checkpoint_every_steps)
  writer = create_writer(workdir)
  progress = None
  try:
    if checkpointer.latest_step() is not None:
      logging.info("resuming from %s step %d", checkpointer.directory, checkpointer.latest_step())
      state = checkpointer.restore(abstract, task.train_iterator)
    else:
      state = init_fn()
    start_step = int(jax.device_get(state.step))
    if start_step >= config.total_steps:
      logging.info(nothing_to_do(workdir, start_step, config.total_steps))
      return state
    last_saved_step = checkpointer.latest_step()

    data_sharding = input_pipeline.batch_sharding(mesh, config.sharding_rules)
    step_rng = jax.random.fold_in(root_rng(config), 1)
    train_step = jit_train_step(task.train_step, shardings, data_sharding,
                                config.sharding_rules)
    frozen = jax.device_put(task.frozen, sharding_lib.replicated(mesh))
    record = run_metrics.MetricsRecord(workdir, config.total_steps, task.progress_metrics,
                                       start_step) if main_process else None
    recording_writer = _RecordingWriter(writer, record)
    averager = _MetricAverager()
    interval_start = time.perf_counter()
    steps_in_interval = 0
    with checkpoint_lib.PreemptionWatcher() as preemption:
      for step in range(start_step, config.total_steps):
        batch = input_pipeline.make_global_batch(next(task.train_iterator), data_sharding)
        rng = jax.random.fold_in(step_rng, step)
        if step == start_step:
          logging.info("compiling the train step (minutes for a large model on CPU)")
          compile_start = time.perf_counter()
          train_step = train_step.lower(state, batch, rng, frozen).compile()
          wait_for_every_process("vasa_jax_train_step_compiled")
          logging.info("train step compiled in %.1f s; training steps %d to %d",
                       time.perf_counter() - compile_start, start_step + 1, config.total_steps)
        state, metrics = train_step(state, batch, rng, frozen)
        if step == start_step:
          # Started after the compilation, so that steps/s and the ETA measure training.
          progress = tqdm.tqdm(total=config.total_steps, initial=start_step, desc="train",
                               unit="step", dynamic_ncols=True, smoothing=0.1,
                               disable=not main_process)
        progress.update(1)
        averager.add(metrics)
        steps_in_interval += 1
        done = step + 1
        stopping = preemption.should_stop(done) or done == config.total_steps
        saving = stopping or done % config.checkpoint_every_steps == 0
        logging_now = done % config.log_every_steps == 0 or saving
        evaluating = bool(config.eval_every_steps and done % config.eval_every_steps == 0
                          and task.evaluate)
        if not (logging_now or evaluating):
          continue
        with _above(progress):  # metric, evaluation and checkpoint log lines
          if logging_now:
            # Metrics are checked before any checkpoint so a non-finite state is never saved.
            scalars = averager.result()
            check_finite(scalars, done, checkpointer.directory, last_saved_step)
            elapsed = time.perf_counter() - interval_start
            scalars["steps_per_second"] = steps_in_interval / max(elapsed, 1e-9)
            recording_writer.write_scalars(done, scalars)
            progress.set_postfix_str(progress_text(scalars, task.progress_metrics),
                                     refresh=False)
            interval_start, steps_in_interval = time.perf_counter(), 0
          if evaluating:
            eval_start = time.perf_counter()
            task.evaluate(state, done, recording_writer)
            logging.info("evaluation at step %d took %.1f s", done,
                         time.perf_counter() - eval_start)
          if record is not None:
            record.write()
          if saving and checkpointer.save(done, state, task.train_iterator, force=stopping):
            last_saved_step = done
        if stopping:
          break
  finally:
    if progress is not None:
      progress.close()
    checkpointer.close()  # waits for a save in flight
    writer.close()
  return state
