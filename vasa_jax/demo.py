"""The project's main job on an embedded default, end to end on one CPU machine.

  python -m vasa_jax.demo --workdir=/tmp/vasa_demo

Today it runs the data foundation; later stages extend it to training and sampling:
  1. generates a small SynthTalk set (synthetic talking heads with ground truth);
  2. writes some SynthTalk clips as real H.264/AAC mp4 files in the VoxCeleb2 layout and prepares
     them with `data_prep.prepare` (PyAV decoding, dlib face tracking, cropping, sharding), as a
     real data set would be;
  3. compares the tracker's head pose with the ground truth the clips were rendered with;
  4. reads both sets through the Grain pipelines (stage-1 frame pairs, stage-2 windows);
  5. prints what the data holds, and writes `summary.json` and `contact_sheet.png` in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from vasa_jax.data import media
from vasa_jax.data import prepare
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.data.synthtalk import render as synthtalk_render
from vasa_jax.data import input_pipeline
from vasa_jax.data import records


def _synthtalk(workdir: str, args: argparse.Namespace) -> str:
  output_dir = os.path.join(workdir, "synthtalk")
  synthtalk.main([f"--output_dir={output_dir}", f"--num_speakers={args.num_speakers}",
                  f"--clips_per_speaker={args.clips_per_speaker}",
                  f"--resolution={args.resolution}", f"--num_workers={args.num_workers}",
                  "--test_fraction=0.25"])
  return output_dir


def _as_voxceleb2_tree(synthtalk_dir: str, tree_dir: str, num_clips: int,
                       source_resolution: int) -> dict[str, dict]:
  """Writes the first `num_clips` SynthTalk clips as `dev/mp4/<speaker>/<video>/NNNNN.mp4`.

  The videos are re-rendered at `source_resolution` from each record's stored identity and
  factors, as a higher-resolution source video. Returns {clip_id in the tree: the SynthTalk
  record} for comparing the tracker with the ground truth.
  """
  manifest = records.read_manifest(synthtalk_dir)
  written = {}
  for path in records.split_shard_paths(synthtalk_dir, manifest, "train"):
    for record in records.read_shard(path):
      if len(written) == num_clips:
        return written
      speaker, clip = record["clip_id"].split("/")
      clip_id = f"{speaker}/demo_video/{int(clip):05d}"
      video_path = os.path.join(tree_dir, "dev", "mp4", clip_id + ".mp4")
      os.makedirs(os.path.dirname(video_path), exist_ok=True)
      truth = record["ground_truth"]
      frames, _ = synthtalk_render.render_frames(
          synthtalk_render.Identity.from_array(truth["identity"]), truth["factors"],
          source_resolution)
      media.write_video(video_path, frames, record["fps"],
                        audio=record["audio"].astype(np.float32) / 32768.0,
                        sample_rate=record["audio_sample_rate"])
      written[clip_id] = record
  return written


def _tracker_errors(prepared_dir: str, truth: dict[str, dict]) -> dict[str, float]:
  """Mean absolute difference (degrees) of tracked and ground-truth yaw, pitch and roll."""
  manifest = records.read_manifest(prepared_dir)
  differences = []
  for split in manifest["splits"]:
    for path in records.split_shard_paths(prepared_dir, manifest, split):
      for record in records.read_shard(path):
        true_pose = truth[record["clip_id"]]["annotations"]["head_pose"]
        count = min(len(true_pose), len(record["frames"]))
        differences.append(record["annotations"]["head_pose"][:count] - true_pose[:count])
  differences = np.abs(np.concatenate(differences))
  return {f"{name}_mean_abs_error_degrees": round(float(differences[:, i].mean()), 2)
          for i, name in enumerate(("yaw", "pitch", "roll"))}


def _describe(data_dir: str) -> dict[str, Any]:
  manifest = records.read_manifest(data_dir)
  splits = {split: {"records": len(info["clips"]),
                    "speakers": len({clip["speaker_id"] for clip in info["clips"]}),
                    "frames": sum(clip["num_frames"] for clip in info["clips"])}
            for split, info in manifest["splits"].items()}
  return {"splits": splits, "skipped": manifest["skipped"], "resolution": manifest["resolution"],
          "fps": manifest["fps"]}


def _contact_sheet(path: str, rows: Sequence[np.ndarray], size: int) -> None:
  """Rows of uint8 images [N, S, S, 3], resized to `size`, stacked into one PNG."""
  width = max(len(row) for row in rows) * size
  sheet = Image.new("RGB", (width, len(rows) * size), (255, 255, 255))
  for row_index, row in enumerate(rows):
    for column, image in enumerate(row):
      tile = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
      sheet.paste(tile, (column * size, row_index * size))
  sheet.save(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="Where everything is written.")
  parser.add_argument("--num_speakers", type=int, default=8)
  parser.add_argument("--clips_per_speaker", type=int, default=4)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--num_mp4_clips", type=int, default=6,
                      help="SynthTalk clips re-encoded as mp4 and prepared with the tracker.")
  parser.add_argument("--num_workers", type=int, default=2)
  args = parser.parse_args(argv)
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)

  print("1/4 generating SynthTalk ...", flush=True)
  synthtalk_dir = _synthtalk(workdir, args)
  print("2/4 writing mp4 files in the VoxCeleb2 layout and preparing them ...", flush=True)
  tree_dir = os.path.join(workdir, "voxceleb2_layout")
  truth = _as_voxceleb2_tree(synthtalk_dir, tree_dir, args.num_mp4_clips,
                             source_resolution=2 * args.resolution)
  prepared_dir = os.path.join(workdir, "prepared")
  prepare.prepare(prepare.PrepareConfig(
      source="voxceleb2", input_dir=tree_dir, output_dir=prepared_dir,
      resolution=args.resolution, num_workers=args.num_workers, clips_per_shard=4))

  print("3/4 comparing the tracker with the ground truth ...", flush=True)
  summary = {"synthtalk": _describe(synthtalk_dir), "prepared_mp4": _describe(prepared_dir),
             "tracker_vs_ground_truth": _tracker_errors(prepared_dir, truth)}

  print("4/4 reading batches through Grain ...", flush=True)
  pairs = next(input_pipeline.stage1_iterator(
      synthtalk_dir, "train", batch_size=4, image_size=args.resolution, seed=0))
  windows = next(input_pipeline.stage2_iterator(
      synthtalk_dir, "train", batch_size=4, window=25, num_previous=5,
      frame_fields=("ground_truth/factors", "annotations/head_pose"), with_audio=True, seed=0))
  summary["stage1_batch"] = {key: f"{value.dtype}{list(value.shape)}"
                             for key, value in pairs.items()}
  summary["stage2_batch"] = {key: f"{value.dtype}{list(value.shape)}"
                             for key, value in windows.items()}
  prepared_records = records.read_shard(records.split_shard_paths(
      prepared_dir, records.read_manifest(prepared_dir), "train")[0])
  _contact_sheet(os.path.join(workdir, "contact_sheet.png"), [
      pairs["source_image"], pairs["driver_image"], pairs["cross_identity_image"],
      np.stack([media.decode_jpeg(record["frames"][0]) for record in prepared_records[:4]]),
  ], size=128)
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps(summary, indent=1))
  print(f"contact sheet (rows: source, driver, cross-identity frames of a stage-1 batch; "
        f"crops the tracker made from the mp4 files): {workdir}/contact_sheet.png")
  return summary


if __name__ == "__main__":
  main()
