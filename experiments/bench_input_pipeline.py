r"""Throughput of the Grain input pipelines on prepared directories; prints and writes JSON.

  python -m data_prep.synthtalk --output_dir=/tmp/bench/st512 --num_speakers=4 \
      --clips_per_speaker=2 --resolution=512 --min_seconds=10 --max_seconds=10 --test_fraction=0
  python experiments/bench_input_pipeline.py --data_dirs=/tmp/bench/st256,/tmp/bench/st512 \
      --output=experiments/results/bench_input_pipeline_<commit>.json

For each directory (frames read at the manifest's resolution), the work one core does per example:
the stage-1 sampler (a source/driver pair of a clip and a frame of another speaker, with their
annotations, region masks and the paper configs' augmentation) and the stage-2 sampler (a window
of head poses with the raw audio) are called in this thread, as a Grain worker calls them, over a
seeded shuffle of the records, after one warm-up call. The rate per core is examples over this
process's CPU seconds (`time.process_time`, which other programs sharing the cores inflate less
than wall-clock time), the median of --repeats runs; wall-clock rates are written beside it. The
script runs on record format 1 and 2 alike, so one checkout's pipeline can be compared with
another's.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

# The repository root, so `vasa_jax` is this checkout's (experiments run as scripts).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import latent as latent_config
from vasa_jax.data import input_pipeline
from vasa_jax.data import records


def per_core(sample_fn, num_records: int, num_examples: int, repeats: int) -> dict[str, float]:
  """Examples per CPU second (and per wall second) of `sample_fn(record_index, rng)` called in
  this thread over a seeded shuffle of the records, after one warm-up call: the work one core
  (one Grain worker) does per example. The median of `repeats` runs of `num_examples` each."""
  rng = np.random.default_rng(0)
  order = np.concatenate([rng.permutation(num_records)
                          for _ in range(-(-(repeats * num_examples + 1) // num_records))])
  sample_fn(int(order[0]), rng)  # warm-up: file opening
  per_cpu_second, per_second = [], []
  for repeat in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    for record_index in order[1 + repeat * num_examples:1 + (repeat + 1) * num_examples]:
      sample_fn(int(record_index), rng)
    per_cpu_second.append(num_examples / (time.process_time() - cpu))
    per_second.append(num_examples / (time.perf_counter() - wall))
  return {"per_cpu_second": round(float(np.median(per_cpu_second)), 2),
          "per_second": round(float(np.median(per_second)), 2)}


def commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dirs", required=True, help="Comma-separated prepared directories.")
  parser.add_argument("--split", default="train")
  parser.add_argument("--num_examples", type=int, default=60)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--window", type=int, default=25)
  parser.add_argument("--output", default="bench_input_pipeline.json")
  parser.add_argument("--code", default="",
                      help="What code is measured (default: this checkout's git commit).")
  args = parser.parse_args()

  # The paper configs' augmentation (flip, colour, zoom and shift).
  augmentation = input_pipeline.Augmentation.from_config(
      latent_config.get_config("paper").data.augment)
  results = []
  for data_dir in args.data_dirs.split(","):
    manifest = records.read_manifest(data_dir)
    clips = manifest["splits"][args.split]["clips"]
    image_size = int(manifest["resolution"])
    index = input_pipeline.ClipIndex.load(data_dir, args.split)
    reader = input_pipeline._RecordReader(index)  # pylint: disable=protected-access
    stage1 = per_core(input_pipeline.Stage1Sampler(reader, image_size, augmentation),
                      len(clips), args.num_examples, args.repeats)
    stage2 = per_core(input_pipeline.Stage2Sampler(
        reader, args.window, 5, ("annotations/head_pose",), with_audio=True),
        len(clips), args.num_examples, args.repeats)
    results.append({
        "data_dir": data_dir, "data_settings": {  # the preparation flags (scalars)
            key: value for key, value in manifest.get("settings", {}).items()
            if not isinstance(value, (list, dict))},
        "image_size": image_size, "num_clips": len(clips),
        "seconds_per_clip": round(sum(c["num_frames"] for c in clips) / len(clips)
                                  / float(manifest["fps"]), 2),
        "stage1_examples_per_cpu_second": stage1["per_cpu_second"],
        "stage1_examples_per_second": stage1["per_second"],
        "stage2_windows_per_cpu_second": stage2["per_cpu_second"],
        "stage2_windows_per_second": stage2["per_second"]})
    print(f"{image_size}px: stage 1 {stage1['per_cpu_second']:8.1f} examples per CPU second "
          f"({stage1['per_second']:.1f}/s wall)   stage 2 {stage2['per_cpu_second']:8.1f} windows "
          f"per CPU second ({stage2['per_second']:.1f}/s wall)", flush=True)
  report = {"code": args.code or commit(), "record_format_version": records.RECORD_FORMAT_VERSION,
            "num_examples": args.num_examples, "repeats": args.repeats,
            "augmentation": dataclasses.asdict(augmentation),
            "machine": f"{platform.machine()} {os.cpu_count()} cores {platform.processor()}",
            "results": results}
  with open(args.output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
