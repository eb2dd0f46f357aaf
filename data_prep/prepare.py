r"""Prepares real talking-head video as ArrayRecord shards (`vasa_jax.data.prepare`).

  python -m data_prep.prepare --source=voxceleb2 --input_dir=/data/voxceleb2 \
      --output_dir=/data/vox_512 --resolution=512 --num_workers=8
  python -m data_prep.prepare --source=folder --input_dir=/data/hdtf --output_dir=/data/hdtf_512 \
      [--manifest_csv=clips.csv]

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
  print(f"wrote {summary.manifest_path}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
