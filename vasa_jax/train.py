"""Trains any stage: `python -m vasa_jax.train --config=configs/<stage>.py[:variant] --workdir=DIR`.

The config's `stage` names the trainer module `vasa_jax.trainers.<stage>`, which provides
`train_and_evaluate(config, workdir, mesh)`. Config fields are overridden on the command line
(`--config.batch_size=32 --config.data_dir=/data/vox2`). Re-running with the same workdir resumes
from its newest checkpoint; a run already at `total_steps` says there is nothing to do and exits
0. On several hosts, start one process per host with `--multihost`: JAX's distributed runtime
(`jax.distributed.initialize()`) then finds the coordinator, the process count and this process's
index in the cluster's environment (SLURM, Open MPI, Kubernetes, TPU pods), or takes them from
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`. The mesh then spans every
device of every process, each process reads its own share of every batch (disjoint records), and
process 0 alone writes metrics, images and the config; a SIGTERM to any process stops all of
them at the same step after one checkpoint saved together (docs/training.md, "Many GPUs and many
hosts").

Mistakes in the command line, the config or the data (an unknown `--config.` field, a missing or
empty data directory, data of the other stage, a checkpoint of another model) end with one line
`error: ...` and exit status 1; with `--verbosity=1` the traceback follows (and Orbax's
checkpoint INFO lines show). docs/training.md says what a run prints and writes.
"""

import importlib
import logging
import os
import re
import sys
from typing import NoReturn

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

from vasa_jax.training import checkpoint as checkpoint_lib
from vasa_jax.training import loop
from vasa_jax.training import sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Initialise JAX's distributed runtime (one process per host), from the "
    "cluster's environment or the three flags below.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "With --multihost: HOST:PORT where process 0 serves the "
    "distributed runtime (default: from the cluster's environment).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --multihost: how many processes take part (default: from the "
    "cluster's environment).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --multihost: this process's index, 0 to num_processes - 1 "
    "(default: from the cluster's environment).")

# Errors that name a problem of the command line, config, data or workdir: printed as one line.
USER_ERRORS = (ValueError, OSError, KeyError, loop.NonFiniteLossError)


def trainer_module(stage: str):
  """The trainer of a stage, with an error that lists what exists when it does not."""
  trainers_dir = os.path.join(os.path.dirname(__file__), "trainers")
  available = sorted(name[:-3] for name in os.listdir(trainers_dir)
                     if name.endswith(".py") and not name.startswith("_")
                     ) if os.path.isdir(trainers_dir) else []
  if not stage:
    raise ValueError("the config sets no `stage`; it must name a trainer in vasa_jax/trainers "
                     f"(available: {available or 'none yet'})")
  if stage not in available:
    raise ValueError(f"no trainer for stage {stage!r}: vasa_jax/trainers has "
                     f"{available or 'no trainers yet'}")
  return importlib.import_module(f"vasa_jax.trainers.{stage}")


def one_line(error: BaseException) -> str:
  """An exception's message on one line (a KeyError's without the quotes str() adds)."""
  text = error.args[0] if isinstance(error, KeyError) and error.args else error
  return " ".join(str(text).split())


def _argv_verbosity(argv: list[str]) -> int:
  """--verbosity / -v as given on the command line (flags are not parsed yet); 0 if absent."""
  for arg in argv[1:]:
    match = re.fullmatch(r"--?(?:verbosity|v)=(-?\d+)", arg)
    if match:
      return int(match.group(1))
  return 0


def _fail(message: str, argv: list[str]) -> NoReturn:
  """Re-raises the exception being handled at --verbosity >= 1, else prints one line, exits 1."""
  if _argv_verbosity(argv) >= 1:
    raise  # pylint: disable=misplaced-bare-raise
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def _unknown_field_message(error: Exception, argv: list[str]) -> str:
  """ml_collections' error for an override of a field the config lacks, e.g.
  `'total_step'\\nDid you mean "total_steps" instead of "total_step"?`, as one line."""
  text = str(error)
  field = re.search(r"'(\w+)", text)
  suggestion = re.search(r'Did you mean \\?"(\w+)', text)
  overrides = [arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--config.")]
  named = [flag for flag in overrides
           if field and field.group(1) in flag[len("--config."):].split(".")]
  flag = named[0] if named else (field.group(1) if field else one_line(error))
  message = f"unknown config field {flag}: the config file defines no such field"
  if suggestion and named:
    message += f" (did you mean {flag.rsplit('.', 1)[0]}.{suggestion.group(1)}?)"
  return message


def _flag_error_message(error: flags.Error) -> str:
  """absl's flag error as one line; for a config file that failed, the error it raised."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if "Traceback (most recent call last):" in lines:
    flag = lines[0].split(": Error whilst parsing config file")[0]
    return f"{flag}: {re.sub(r'^[A-Za-z_.]*(Error|Exception): ', '', lines[-1])}"
  return " ".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with one-line errors for a missing config file, an unknown flag or
  config field, and a bad flag value."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg[len("--config="):].partition(":")[0]
      if not os.path.isfile(path):
        print(f"error: config file {path!r} does not exist", file=sys.stderr)
        sys.exit(1)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    _fail(_flag_error_message(error), argv)
  except (AttributeError, KeyError) as error:  # ml_collections: --config.<field> it lacks
    _fail(_unknown_field_message(error, argv), argv)


def initialize_distributed() -> None:
  """With --multihost, `jax.distributed.initialize()` from the explicit flags given and the
  cluster's environment for the rest; without it, refuses the explicit flags."""
  explicit = {"coordinator_address": _COORDINATOR_ADDRESS.value,
              "num_processes": _NUM_PROCESSES.value, "process_id": _PROCESS_ID.value}
  given = {name: value for name, value in explicit.items() if value is not None}
  if not _MULTIHOST.value:
    if given:
      raise ValueError(f"--{' --'.join(given)} only apply with --multihost")
    return
  try:
    jax.distributed.initialize(**given)
  except ValueError as error:  # nothing in the environment to fill the missing values from
    raise ValueError(
        f"--multihost: {one_line(error)} (outside SLURM, Open MPI, Kubernetes or a TPU pod pass "
        "--coordinator_address=HOST:PORT --num_processes=N --process_id=I to every process)"
    ) from error


def train(argv: list[str]) -> None:
  """Builds the stage's trainer and trains (or says there is nothing to do)."""
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  initialize_distributed()
  config = _CONFIG.value
  trainer = trainer_module(config.stage)
  workdir = _WORKDIR.value
  if not workdir:
    raise ValueError("--workdir is required (checkpoints and logs go there)")
  finished = checkpoint_lib.latest_step(workdir)
  if finished is not None and finished >= config.total_steps:
    logging.info(loop.nothing_to_do(workdir, finished, config.total_steps))
    return
  mesh = sharding.create_mesh(config.mesh)
  logging.info("process %d of %d, mesh %s", jax.process_index(), jax.process_count(),
               dict(mesh.shape))
  trainer.train_and_evaluate(config, workdir, mesh)


def main(argv: list[str]) -> int:
  try:
    train(argv)
  except USER_ERRORS as error:
    if absl_logging.get_verbosity() >= 1:
      raise
    print(f"error: {one_line(error)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=parse_flags)
