"""A SyncNet that works here: train on SynthTalk, then recover known audio offsets of held-out
clips with the evaluator's scoring.

  python experiments/syncnet_synthtalk.py --workdir=/tmp/syncnet_synthtalk

1. Generates a SynthTalk set (`--num_speakers` speakers x `--clips_per_speaker` clips, 128 px,
   3-4 s; 20% of the speakers held out as the test split), unless it exists.
2. Trains syncnet_python's architecture (`configs/syncnet.py:cpu`, 0.25 width) for `--steps`
   with the offset objective (`vasa_jax.trainers.syncnet`: each lip window against the audio
   windows at every offset -15 .. 15 and the zero embedding), unless the workdir already holds
   the trained weights.
3. For each of `--test_clips` held-out clips (speakers never trained on): the faces are tracked and
   cropped exactly as `python -m vasa_jax.evaluate` does (the tracker's landmarks, syncnet_python's
   crop), the audio is shifted by s = -5 .. +5 frames (s > 0: the sound comes s frames late; zeros
   fill the gap) and scored as `SyncNetInstance.evaluate` (vshift 15). A shift is recovered when
   the reported offset is -s (syncnet_python's sign: positive = the sound comes early). Sc of the
   unshifted audio is compared with Sc of a shuffled control (the next test clip's audio).
Writes `syncnet_synthtalk.json` in the workdir (copied to experiments/results/ for the record).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from absl import logging as absl_logging
import jax
import numpy as np

# The repository root, for its configs/ folder (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import syncnet as syncnet_config
from vasa_jax import pipeline
from vasa_jax.data import input_pipeline
from vasa_jax.data import media
from vasa_jax.data import records
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.evaluators import syncnet as sync_eval
from vasa_jax.evaluators import tracking
from vasa_jax.models import pretrained
from vasa_jax.models import syncnet as syncnet_lib
from vasa_jax.trainers import syncnet as syncnet_trainer
from vasa_jax.training import sharding

SHIFTS = tuple(range(-5, 6))


def shift_audio(audio: np.ndarray, frames: int) -> np.ndarray:
  """The audio `frames` video frames later (> 0) or earlier (< 0), same length, zero-filled."""
  samples = frames * sync_eval.SAMPLES_PER_FRAME
  if samples >= 0:
    return np.concatenate([np.zeros(samples, audio.dtype), audio])[:len(audio)]
  return np.concatenate([audio[-samples:], np.zeros(-samples, audio.dtype)])


def make_data(args: argparse.Namespace) -> str:
  """The SynthTalk set under the workdir (made once; `pipeline.make_synthtalk` refuses one made
  with other settings)."""
  data_dir = os.path.join(args.workdir, "synthtalk")
  pipeline.make_synthtalk(data_dir, pipeline.SynthTalkSettings(
      num_speakers=args.num_speakers, clips_per_speaker=args.clips_per_speaker,
      resolution=128, min_seconds=3, max_seconds=4, test_fraction=0.2, seed=args.seed,
      num_workers=args.num_workers))
  return data_dir


def train(args: argparse.Namespace, data_dir: str) -> tuple[str, float]:
  """(trained weight file, training seconds; 0 when it was already there)."""
  config = syncnet_config.get_config("cpu")
  config.data_dir = data_dir
  config.total_steps = args.steps
  config.seed = args.seed
  train_dir = os.path.join(args.workdir, "train")
  weights = os.path.join(train_dir, syncnet_trainer.WEIGHTS_FILE)
  if os.path.exists(weights):
    return weights, 0.0
  start = time.perf_counter()
  syncnet_trainer.train_and_evaluate(config, train_dir, sharding.create_mesh(config.mesh))
  return weights, time.perf_counter() - start


def evaluate(args: argparse.Namespace, data_dir: str, weights: str) -> dict:
  width = syncnet_config.get_config("cpu").model.width
  scorer = sync_eval.SyncNetScorer(pretrained.load_syncnet(weights, width=width),
                                   syncnet_lib.SyncNet(width=width))
  tracker = tracking.make_tracker()
  test_ids = records.read_manifest(data_dir)["splits"]["test"]["clips"]
  clips = []
  for record in input_pipeline.split_records(data_dir, "test", range(
      min(args.test_clips, len(test_ids)))):
    frames = np.stack([media.decode_jpeg(frame) for frame in record["frames"]])
    track = tracking.track(frames, sync_eval.FPS, tracker)
    crops = sync_eval.crop_faces(frames, track.found, track.landmarks)
    clips.append({"clip_id": record["clip_id"], "crops": crops,
                  "audio": np.asarray(record["audio"], np.int16)})
  results, per_shift = [], {shift: [] for shift in SHIFTS}
  for index, clip in enumerate(clips):
    crops = clip["crops"]
    audio = sync_eval.clip_audio(clip["audio"], crops.first, crops.last)
    count = sync_eval.num_windows(len(crops.crops), len(audio))
    lips = scorer.lip_embeddings(crops.crops, count)

    def scores(samples):
      return sync_eval.offset_scores(lips, scorer.audio_embeddings(samples, count))

    offsets = {}
    for shift in SHIFTS:
      offsets[shift] = scores(shift_audio(audio, shift)).offset
      per_shift[shift].append(offsets[shift] == -shift)
    other = clips[(index + 1) % len(clips)]
    other_audio = sync_eval.clip_audio(other["audio"], other["crops"].first,
                                       other["crops"].last)
    other_audio = np.resize(other_audio, len(audio))  # repeated or cut to this clip's length
    matched, shuffled = scores(audio), scores(other_audio)
    results.append({"clip_id": clip["clip_id"], "windows": count,
                    "offsets": {str(shift): int(offset) for shift, offset in offsets.items()},
                    "sync_confidence": matched.confidence, "sync_distance": matched.distance,
                    "shuffled_sync_confidence": shuffled.confidence,
                    "shuffled_sync_distance": shuffled.distance})
  recovered = [value for values in per_shift.values() for value in values]
  return {
      "offset_recovery_rate": float(np.mean(recovered)),
      "offset_recovery_by_shift": {str(shift): float(np.mean(values))
                                   for shift, values in per_shift.items()},
      "cases": len(recovered),
      "mean_sync_confidence_matched": float(np.mean([r["sync_confidence"] for r in results])),
      "mean_sync_confidence_shuffled": float(np.mean(
          [r["shuffled_sync_confidence"] for r in results])),
      "matched_above_shuffled_rate": float(np.mean(
          [r["sync_confidence"] > r["shuffled_sync_confidence"] for r in results])),
      "clips": results,
  }


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num_speakers", type=int, default=30)
  parser.add_argument("--clips_per_speaker", type=int, default=6)
  parser.add_argument("--steps", type=int, default=syncnet_config.get_config("cpu").total_steps)
  parser.add_argument("--test_clips", type=int, default=20)
  parser.add_argument("--seed", type=int, default=11)
  parser.add_argument("--num_workers", type=int, default=1)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  absl_logging.set_verbosity(absl_logging.INFO)  # the training loop's metrics, on stderr
  absl_logging.set_stderrthreshold(absl_logging.INFO)
  os.makedirs(args.workdir, exist_ok=True)
  data_dir = make_data(args)
  weights, train_seconds = train(args, data_dir)
  start = time.perf_counter()
  results = evaluate(args, data_dir, weights)
  results["settings"] = {
      "config": "configs/syncnet.py:cpu", "steps": args.steps,
      "num_speakers": args.num_speakers, "clips_per_speaker": args.clips_per_speaker,
      "test_clips": len(results["clips"]), "shifts": list(SHIFTS), "seed": args.seed,
      "train_seconds": train_seconds, "evaluate_seconds": time.perf_counter() - start,
      "devices": [str(device) for device in jax.devices()][:1],
      "espeak": synthtalk.espeak_available()}
  with open(os.path.join(args.workdir, "syncnet_synthtalk.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(json.dumps({key: value for key, value in results.items() if key != "clips"}, indent=2))
  return results


if __name__ == "__main__":
  main()
