r"""Prepares real talking-head video as ArrayRecord shards (`vasa_jax.data.prepare`).

  python -m data_prep.prepare --source=voxceleb2 --input_dir=/data/voxceleb2 \
      --output_dir=/data/vox_512 --resolution=512 --num_workers=8
  python -m data_prep.prepare --source=folder --input_dir=/data/hdtf --output_dir=/data/hdtf_512 \
      [--manifest_csv=clips.csv]
  # On many machines (e.g. a SLURM array of N tasks), then once all have finished:
  python -m data_prep.prepare ... --num_tasks=$SLURM_ARRAY_TASK_COUNT \
      --task_index=$SLURM_ARRAY_TASK_ID
  python -m data_prep.prepare ... --merge

The flags are the fields of `vasa_jax.data.prepare.PrepareConfig`; see that module for what is
decoded, tracked, filtered and written.
"""

import dataclasses
import sys
from typing import Sequence

from absl import app
from absl import flags

from vasa_jax.data import prepare as prepare_lib


def _define_flags() -> None:
  """Defines the command line flags (only when run as a program, so importing defines none)."""
  defaults = prepare_lib.PrepareConfig
  flags.DEFINE_enum("source", None, prepare_lib.SOURCES, "voxceleb2: the VoxCeleb2 layout; folder: any "
                    "tree of videos with speaker = top-level folder, or --manifest_csv.")
  flags.DEFINE_string("input_dir", None, "Root directory of the data set.")
  flags.DEFINE_string("output_dir", None, "Where shards and manifest.json go.")
  flags.DEFINE_integer("resolution", defaults.resolution, "Side of the square face crops.")
  flags.DEFINE_float("fps", defaults.fps, "Frame rate the video is resampled to.")
  flags.DEFINE_integer("num_workers", defaults.num_workers,
                       "Worker processes (one face tracker each); 1 works in-process.")
  flags.DEFINE_integer("clips_per_shard", defaults.clips_per_shard,
                       "Input clips assigned to each shard (the unit of work and of resuming).")
  flags.DEFINE_float("min_seconds", defaults.min_seconds, "Shorter clips are skipped.")
  flags.DEFINE_float("max_seconds", defaults.max_seconds, "Longer clips are cut to this length.")
  flags.DEFINE_float("test_fraction", defaults.test_fraction,
                     "Share of speakers hashed into the test split where the source names none.")
  flags.DEFINE_string("manifest_csv", defaults.manifest_csv,
                      "--source=folder: CSV with columns path,speaker_id[,split].")
  flags.DEFINE_float("silence_dbfs", defaults.silence_dbfs,
                     "Clips whose audio RMS level (dBFS) is below this are skipped as silent.")
  flags.DEFINE_integer("jpeg_quality", defaults.jpeg_quality, "JPEG quality of stored frames.")
  flags.DEFINE_integer("num_tasks", defaults.num_tasks,
                       "Independent tasks (machines, array jobs) sharing the planned shards; a "
                       "task of several writes no manifest (see --merge).")
  flags.DEFINE_integer("task_index", defaults.task_index,
                       "This task's number, 0 <= task_index < num_tasks: it prepares the planned "
                       "shards task_index, task_index + num_tasks, ...")
  flags.DEFINE_bool("merge", defaults.merge,
                    "Write the manifest of the shards every task made (the same other flags); "
                    "refuses, naming them, while shards are missing.")
  flags.DEFINE_string("emotion_weights", defaults.emotion_weights,
                      "A converted emotion classifier (`data_prep.convert_weights "
                      "--kind=emotion`): each frame's emotion scores (8, softmax) of the face "
                      "crop are stored in the records; unset: none.")
  flags.mark_flags_as_required(["source", "input_dir", "output_dir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  config = prepare_lib.PrepareConfig(**{field.name: values[field.name].value
                            for field in dataclasses.fields(prepare_lib.PrepareConfig)})
  try:
    summary = prepare_lib.prepare(config)
  except prepare_lib.PrepareError as e:
    sys.exit(f"error: {e}")
  if summary.manifest_path is None:
    print(f"task {config.task_index} of {config.num_tasks}: {summary.shards_processed} shards "
          f"prepared, {summary.shards_reused} already done; run --merge once every task is done")
  else:
    print(f"wrote {summary.manifest_path}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
