"""Orbax checkpoints that hold the train state and the Grain iterator together, and SIGTERM saves.

A checkpoint at step N holds the whole train state (parameters, optimiser state, EMA, step) and
each process's data iterator position, so a restored run continues with exactly the batches an
uninterrupted run would have seen.

Orbax logs ~50 INFO lines per checkpoint; they are hidden unless absl's --verbosity is 1 or more
(`hide_orbax_info_logs`, installed by every Orbax user here); its warnings always show.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from absl import logging as absl_logging
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

STATE_ITEM = "state"
DATA_ITEM = "data_iterator"
# The run's config, next to `checkpoints/` in the workdir (inference rebuilds models from it).
CONFIG_NAME = "config.json"


class _OrbaxInfoFilter(logging.Filter):
  """Drops the INFO (and DEBUG) records of Orbax's modules unless --verbosity >= 1."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or absl_logging.get_verbosity() >= 1
            or f"{os.sep}orbax{os.sep}" not in record.pathname)


def hide_orbax_info_logs() -> None:
  """Installs `_OrbaxInfoFilter` on the "absl" logger, through which Orbax logs (once)."""
  logger = logging.getLogger("absl")
  if not any(isinstance(existing, _OrbaxInfoFilter) for existing in logger.filters):
    logger.addFilter(_OrbaxInfoFilter())


def latest_step(workdir: str) -> int | None:
  """The newest finished checkpoint step of a training run's workdir (None: there is none)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  try:
    return max(ocp.utils.checkpoint_steps(directory), default=None)
  except (OSError, ValueError):  # a damaged directory: the restore names the problem
    return None


class Checkpointer:
  """An Orbax `CheckpointManager` over `<workdir>/checkpoints`, keeping the newest N."""

  def __init__(self, directory: str, *, max_to_keep: int, save_interval_steps: int):
    hide_orbax_info_logs()
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True),
        item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(),
                       DATA_ITEM: grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, abstract_state: Any, data_iterator: grain.DatasetIterator,
              step: int | None = None) -> Any:
    """Restores step `step` (default: the latest) into `abstract_state`'s shapes and shardings.

    The data iterator is restored in place. Raises ValueError naming the mismatch when the
    checkpoint does not fit the state (a different model or config).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    self._check_shapes(step, abstract_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(abstract_state),
        DATA_ITEM: grain.checkpoint.CheckpointRestore(data_iterator),
    }))
    return restored[STATE_ITEM]

  def _check_shapes(self, step: int, abstract_state: Any) -> None:
    """Raises ValueError naming the first tensor whose stored shape differs from the state's."""
    stored = _shapes_by_name(self.manager.item_metadata(step)[STATE_ITEM])
    expected = _shapes_by_name(abstract_state)
    problem = None
    if stored.keys() != expected.keys():
      problem = (f"tensors only in the checkpoint: {sorted(stored.keys() - expected.keys())[:5]}"
                 f", only in the state: {sorted(expected.keys() - stored.keys())[:5]}")
    else:
      for name, shape in expected.items():
        if stored[name] != shape:
          problem = f"{name} has shape {stored[name]} there, {shape} here"
          break
    if problem:
      raise ValueError(
          f"checkpoint {self.directory} step {step} does not fit this config's train state "
          f"(written by another model or config?): {problem}")

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator,
           force: bool = False) -> bool:
    """Saves when `step` is on the save interval (or `force`); returns whether it saved."""
    return self.manager.save(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardSave(state),
        DATA_ITEM: grain.checkpoint.CheckpointSave(data_iterator),
    }), force=force)

  def wait_until_finished(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _shapes_by_name(tree: Any) -> dict[str, tuple[int, ...]]:
  """{"params.Dense_0.kernel": shape} for a state, an abstract state or Orbax metadata."""
  def name(path) -> str:
    return ".".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
                    for key in path)
  return {name(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class PreemptionWatcher:
  """Notes a preemption (SIGTERM) so that the loop saves a checkpoint and stops cleanly.

  Under JAX's distributed runtime (`jax.distributed.initialize()`, e.g. `train --multihost`),
  JAX's preemption service owns SIGTERM: the process that receives it tells the others, and
  `should_stop(step)` turns true on every process at the same step
  (`multihost_utils.reached_preemption_sync_point`), so they save one checkpoint together and
  stop. A Python SIGTERM handler would replace the one through which the service learns of the
  signal, so the watcher installs none there. Without the distributed runtime (one process),
  it installs a handler that sets a flag for the next step.
  """

  def __init__(self):
    self._signalled = threading.Event()
    self._previous_handler = None
    self._synchronised = bool(jax.distributed.is_initialized()
                              and jax.config.jax_enable_preemption_service)

  def __enter__(self) -> "PreemptionWatcher":
    if not self._synchronised and threading.current_thread() is threading.main_thread():
      if jax.process_count() > 1:
        logging.warning("JAX's preemption service is off: on SIGTERM each process stops on its "
                        "own, possibly at different steps")
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)

  def _on_signal(self, signum, frame) -> None:  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint after this step, then stopping")
    self._signalled.set()

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step` (call it at every step, on every process)."""
    if self._synchronised:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if multihost_utils.reached_preemption_sync_point(step):
        logging.warning("preempted: every process saves a checkpoint at step %d and stops", step)
        return True
      return False
    return self._signalled.is_set()


class CheckpointError(ValueError):
  """A training workdir cannot serve inference: missing, unreadable or not of the expected stage."""


def write_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Writes `<workdir>/config.json` (atomically) and returns its path."""
  path = os.path.join(workdir, CONFIG_NAME)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=1))
  os.replace(path + ".tmp", path)
  return path


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run in `workdir` wrote (JSON lists where the file had tuples)."""
  import json  # pylint: disable=g-import-not-at-top

  path = os.path.join(workdir, CONFIG_NAME)
  if not os.path.isdir(workdir):
    raise CheckpointError(f"checkpoint directory {workdir!r} does not exist")
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir!r} holds no {CONFIG_NAME}: it is not the --workdir of a "
                          "`python -m vasa_jax.train` run")
  try:
    with open(path, encoding="utf-8") as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as error:
    raise CheckpointError(f"cannot read {path}: {error}") from error


def restore_for_inference(workdir: str, stage: str, step: int | None = None
                          ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """(config, train state as a dict of host numpy arrays, step) of a run's checkpoint.

  Reads the newest checkpoint (or `step`) without a target structure, so no data or optimiser
  needs building; callers take the parts they need (EMA parameters, statistics) and check their
  shapes against their model. Raises CheckpointError naming the problem otherwise.
  """
  hide_orbax_info_logs()
  config = read_config(workdir)
  if config.get("stage") != stage:
    raise CheckpointError(f"{workdir!r} is a {config.get('stage')!r} run, expected a {stage!r} "
                          "run")
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  # Both items' handlers, as the training run saved them (the data iterator's is only
  # registered, so that reading the state's metadata does not warn about an unknown item).
  manager = ocp.CheckpointManager(directory, item_handlers={
      STATE_ITEM: ocp.StandardCheckpointHandler(),
      DATA_ITEM: grain.checkpoint.CheckpointHandler()})
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{directory!r} holds no checkpoint")
    try:
      # Every array onto this process's first device: the checkpoint may have been written by
      # other devices or processes (a multi-host run), which Orbax will not restore onto
      # without a target.
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(
          lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
          manager.item_metadata(step)[STATE_ITEM])
      restored = manager.restore(step, args=ocp.args.Composite(**{
          STATE_ITEM: ocp.args.StandardRestore(target)}))
    except Exception as error:  # Orbax raises many types for damaged files.
      raise CheckpointError(f"cannot read checkpoint {directory!r} step {step}: "
                            f"{type(error).__name__}: {error}") from error
  finally:
    manager.close()
  state = jax.tree.map(np.asarray, restored[STATE_ITEM])
  return config, state, step


def check_param_shapes(restored: Any, abstract: Any, what: str) -> None:
  """Raises CheckpointError naming the first tensor whose restored shape differs from the model's."""
  stored = _shapes_by_name(restored)
  expected = _shapes_by_name(abstract)
  if stored.keys() != expected.keys():
    raise CheckpointError(
        f"{what} does not fit the model: tensors only in the checkpoint "
        f"{sorted(stored.keys() - expected.keys())[:5]}, only in the model "
        f"{sorted(expected.keys() - stored.keys())[:5]}")
  for name, shape in expected.items():
    if stored[name] != shape:
      raise CheckpointError(f"{what} does not fit the model: {name} has shape {stored[name]} "
                            f"in the checkpoint, {shape} in the model")
