r"""Encodes prepared clips into stage-2 motion shards (`vasa_jax.data.extract_motion`).

  python -m data_prep.extract_motion --latent_checkpoint=/tmp/latent_tiny \
      --shards=/data/synthtalk --output_dir=/data/synthtalk_motion --config=configs/motion.py:tiny
  # On many machines: each of N tasks with --num_tasks=N --task_index=I, then once with --merge.

Every frame of every clip is encoded by the stage-1 run's EMA motion encoder into [z_pose, z_dyn],
the speech is turned into per-frame features as the stage-2 config says, and the clip-level gaze
and distance controls are written beside them; see that module for the record format.
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from vasa_jax.data import extract_motion as extract_lib
from vasa_jax.data import records
from vasa_jax.training import checkpoint as checkpoint_lib


def _define_flags() -> None:
  """Defines the command line flags (only when run as a program, so importing defines none)."""
  default_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "configs", "motion.py")
  config_flags.DEFINE_config_file("config", default_config, "Stage-2 config (configs/motion.py"
                                  "[:variant]): its audio features and model dimensions.",
                                  lock_config=True)
  flags.DEFINE_string("latent_checkpoint", None, "--workdir of the stage-1 training run.")
  flags.DEFINE_string("shards", None, "Directory of clip shards with manifest.json.")
  flags.DEFINE_string("output_dir", None, "Where the motion shards and manifest.json go.")
  flags.DEFINE_integer("batch_size", extract_lib.DEFAULT_BATCH_SIZE,
                       "Frames per encoder call (rounded up to a multiple of the device count).")
  flags.DEFINE_bool("overwrite", False, "Redo every shard, even those finished by an earlier run.")
  flags.DEFINE_integer("num_tasks", 1, "Independent tasks (machines, array jobs) sharing the "
                       "input shards; a task of several writes no manifest (see --merge).")
  flags.DEFINE_integer("task_index", 0, "This task's number, 0 <= task_index < num_tasks: it "
                       "extracts the input shards task_index, task_index + num_tasks, ...")
  flags.DEFINE_bool("merge", False, "Write the manifest of the shards every task made (the same "
                    "other flags); refuses, naming them, while shards are missing.")
  flags.mark_flags_as_required(["latent_checkpoint", "shards", "output_dir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  try:
    summary = extract_lib.extract(values.latent_checkpoint, values.shards, values.output_dir,
                                  values.config, batch_size=values.batch_size,
                                  overwrite=values.overwrite, num_tasks=values.num_tasks,
                                  task_index=values.task_index, merge=values.merge)
  except (checkpoint_lib.CheckpointError, extract_lib.ExtractionError, records.RecordFormatError,
          FileNotFoundError) as error:
    sys.exit(f"error: {error}")
  done = (f"{summary.num_clips} clips, {summary.num_frames} frames; {summary.shards_extracted} "
          f"shards extracted, {summary.shards_reused} already done; {summary.seconds:.1f} s")
  if summary.manifest_path is None:
    print(f"task {values.task_index} of {values.num_tasks}: {done}; run --merge once every task "
          "is done")
  else:
    print(f"wrote {summary.manifest_path}: {done}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
