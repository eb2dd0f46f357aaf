"""Trains any stage: `python -m vasa_jax.train --config=configs/<stage>.py[:variant] --workdir=DIR`.

The config's `stage` names the trainer module `vasa_jax.trainers.<stage>`, which provides
`train_and_evaluate(config, workdir, mesh)`. Config fields are overridden on the command line
(`--config.batch_size=32 --config.data_dir=/data/vox2`). Re-running with the same workdir resumes
from its newest checkpoint. On a multi-host cluster, pass `--multihost` on every host:
`jax.distributed.initialize()` then finds the coordinator from the cluster's environment (TPU
pods, SLURM, Open MPI) and each process reads its own share of every batch.
"""

import importlib
import logging
import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from vasa_jax.training import sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Initialise JAX's distributed runtime (one process per host).")


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _MULTIHOST.value:
    jax.distributed.initialize()
  config = _CONFIG.value
  trainer = trainer_module(config.stage)
  workdir = _WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required (checkpoints and logs go there)")
  mesh = sharding.create_mesh(config.mesh)
  logging.info("process %d of %d, mesh %s", jax.process_index(), jax.process_count(),
               dict(mesh.shape))
  trainer.train_and_evaluate(config, workdir, mesh)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
