"""CAPP's calibration on SynthTalk: train the audio and pose encoders, then score held-out clips
with their pose shifted in time and scaled, as VASA-1 calibrates CAPP on VoxCeleb2.

  python experiments/capp_synthtalk.py --workdir=/tmp/capp_synthtalk [--set FIELD=VALUE ...]

1. Generates a SynthTalk set (`--num_speakers` x `--clips_per_speaker` clips of 3.5-5 s at 64 px;
   20% of the speakers held out), unless it exists. SynthTalk's heads nod (pitch) and sway (yaw)
   with the smoothed loudness of the speech, on top of a slow random drift.
2. Trains `configs/capp.py:cpu` for `--steps` (unless the workdir holds a trained CAPP).
3. On every held-out clip (speakers never trained on), windows of 3 s start every 25 frames, 4
   frames clear of either end; the pose comes from the records' annotations. CAPP is the mean
   cosine of the audio and pose embeddings (`vasa_jax.evaluators.capp`), averaged over clips:
   - shift table: the pose window starts s = -4 .. 4 frames after the audio window (s > 0: the
     head moves late);
   - scale table: the pose's motion (its deviation from the window's mean) times 0.2 .. 3;
   - control: each clip's pose against the next held-out clip's speech;
   - reference without training (`loudness_reference`): the correlation of the head pitch with
     the smoothed loudness of the speech (the log-mel energy, smoothed as SynthTalk smooths the
     envelope that drives the nods) over the same windows, for shifts of -8 .. 8 frames: the
     timing signal there is for CAPP to learn, and how sharply it falls with the shift.
Writes `capp_synthtalk.json` in the workdir (copied to experiments/results/ for the record).
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
from configs import capp as capp_config
from vasa_jax import pipeline
from vasa_jax.data import input_pipeline
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.evaluators import capp as capp_eval
from vasa_jax.trainers import capp as capp_trainer
from vasa_jax.training import config_files
from vasa_jax.training import sharding

SHIFTS = tuple(range(-4, 5))
SCALES = (0.2, 0.5, 1.0, 1.5, 3.0)
# VASA-1's calibration on real VoxCeleb2 pairs (section 4.1), for comparison.
PAPER_SHIFT = {0: 0.608, 1: 0.462, 2: 0.206, 3: 0.069, 4: 0.082}
PAPER_SCALE = {0.2: 0.368, 0.5: 0.584, 1.0: 0.608, 1.5: 0.587, 3.0: 0.505}


def make_data(args: argparse.Namespace) -> str:
  """The SynthTalk set under the workdir (made once; `pipeline.make_synthtalk` refuses one made
  with other settings)."""
  data_dir = os.path.join(args.workdir, "synthtalk")
  pipeline.make_synthtalk(data_dir, pipeline.SynthTalkSettings(
      num_speakers=args.num_speakers, clips_per_speaker=args.clips_per_speaker,
      resolution=64, min_seconds=3.5, max_seconds=5, test_fraction=0.2, seed=args.seed,
      num_workers=args.num_workers))
  return data_dir


def make_config(args: argparse.Namespace):
  """`configs/capp.py:cpu` with `--steps`, `--seed` and the `--set FIELD=VALUE` overrides."""
  config = capp_config.get_config("cpu")
  config.total_steps, config.seed = args.steps, args.seed
  config_files.apply_overrides(config, args.set)
  return config


def train(args: argparse.Namespace, data_dir: str) -> tuple[str, float, int]:
  """(trained CAPP directory, training seconds, steps trained; 0 s and None steps when it was
  already there). SIGTERM stops training early (the loop saves), then the check runs."""
  config = make_config(args)
  config.data_dir = data_dir
  train_dir = os.path.join(args.workdir, "train")
  if os.path.exists(os.path.join(train_dir, capp_eval.PARAMS_FILE)):
    return train_dir, 0.0, None
  start = time.perf_counter()
  state = capp_trainer.train_and_evaluate(config, train_dir, sharding.create_mesh(config.mesh))
  return train_dir, time.perf_counter() - start, int(state.step)


# SynthTalk's nods follow the envelope smoothed by a Gaussian of 0.15 s (3.75 frames at 25 fps).
_NOD_SMOOTHING_FRAMES = 3.75
REFERENCE_SHIFTS = tuple(range(-8, 9))


def _gaussian_smooth(values: np.ndarray, frames: float) -> np.ndarray:
  radius = int(3 * frames) + 1
  kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / frames) ** 2)
  return np.convolve(np.pad(values, radius, mode="edge"), kernel / kernel.sum(), mode="valid")


def loudness_reference(clips: list[dict], window: int) -> dict[str, float]:
  """{shift: mean over windows of corr(smoothed loudness, pitch moved by shift)} of the clips
  (their audio is log-mel [T, A], pose [T, 6]; written only for log-mel features); windows
  every 25 frames, 8 frames clear of either end."""
  margin = max(REFERENCE_SHIFTS)
  correlations = {shift: [] for shift in REFERENCE_SHIFTS}
  for clip in clips:
    loudness = _gaussian_smooth(np.log(np.exp(clip["audio"]).sum(axis=1)), _NOD_SMOOTHING_FRAMES)
    pitch = clip["pose"][:, 1]
    for start in capp_eval.window_starts(len(loudness), window, margin=margin):
      audio = loudness[start:start + window] - loudness[start:start + window].mean()
      for shift in REFERENCE_SHIFTS:
        pose = pitch[start + shift:start + shift + window]
        pose = pose - pose.mean()
        correlations[shift].append(
            float(audio @ pose / (np.linalg.norm(audio) * np.linalg.norm(pose) + 1e-9)))
  return {str(shift): float(np.mean(values)) for shift, values in correlations.items()}


def evaluate(data_dir: str, capp_dir: str) -> dict:
  scorer = capp_eval.CAPPScorer(capp_dir)
  margin = max(SHIFTS)
  clips = []
  for record in input_pipeline.split_records(data_dir, "test", with_frames=False):
    audio = scorer.audio_features(np.asarray(record["audio"], np.float32) / 32768.0)
    pose = capp_eval.record_pose(record)
    num_frames = min(len(audio), len(pose))
    starts = capp_eval.window_starts(num_frames, scorer.window, margin=margin)
    if len(starts):
      clips.append({"clip_id": record["clip_id"], "audio": audio[:num_frames],
                    "pose": pose[:num_frames], "starts": starts})
  results = []
  for index, clip in enumerate(clips):
    def capp(pose_shift=0, pose_scale=1.0, audio=clip["audio"]):
      return float(scorer.window_cosines(audio, clip["pose"], clip["starts"], pose_shift,
                                         pose_scale).mean())
    other = clips[(index + 1) % len(clips)]["audio"]
    other = np.resize(other, clip["audio"].shape)  # repeated or cut to this clip's length
    results.append({"clip_id": clip["clip_id"], "windows": len(clip["starts"]),
                    "shift": {str(shift): capp(pose_shift=shift) for shift in SHIFTS},
                    "scale": {str(scale): capp(pose_scale=scale) for scale in SCALES},
                    "other_clip_audio": capp(audio=other)})

  def mean(values):
    return float(np.mean(values))

  shift_table = {str(shift): mean([r["shift"][str(shift)] for r in results]) for shift in SHIFTS}
  zero = shift_table["0"]
  return {
      "capp_by_shift": shift_table,
      "capp_by_scale": {str(scale): mean([r["scale"][str(scale)] for r in results])
                        for scale in SCALES},
      "capp_other_clip_audio": mean([r["other_clip_audio"] for r in results]),
      **({"loudness_pitch_correlation_by_shift": loudness_reference(clips, scorer.window)}
         if scorer.featurizer.kind == "log_mel" else {}),
      "zero_shift_highest_rate": mean([max(r["shift"].values()) == r["shift"]["0"]
                                       for r in results]),
      "shape": {
          "zero_shift_highest": all(value <= zero for value in shift_table.values()),
          "falls_with_shift": all(
              shift_table[str(s)] >= shift_table[str(s + 1)] and
              shift_table[str(-s)] >= shift_table[str(-s - 1)] for s in range(max(SHIFTS))),
      },
      "paper_voxceleb2": {"capp_by_shift": {str(k): v for k, v in PAPER_SHIFT.items()},
                          "capp_by_scale": {str(k): v for k, v in PAPER_SCALE.items()}},
      "clips": results,
  }


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  # 200 speakers: with 20 (80 training clips) the encoders learn the training clips by heart
  # within 100 steps and score held-out clips near 0.
  parser.add_argument("--num_speakers", type=int, default=200)
  parser.add_argument("--clips_per_speaker", type=int, default=5)
  parser.add_argument("--steps", type=int, default=capp_config.get_config("cpu").total_steps)
  parser.add_argument("--seed", type=int, default=13)
  parser.add_argument("--num_workers", type=int, default=1)
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="change a field of configs/capp.py:cpu, e.g. --set batch_size=8; "
                      "repeatable")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  absl_logging.set_verbosity(absl_logging.INFO)  # the training loop's metrics, on stderr
  absl_logging.set_stderrthreshold(absl_logging.INFO)
  os.makedirs(args.workdir, exist_ok=True)
  config = make_config(args)
  data_dir = make_data(args)
  capp_dir, train_seconds, steps_trained = train(args, data_dir)
  start = time.perf_counter()
  results = evaluate(data_dir, capp_dir)
  results["settings"] = {
      "config": "configs/capp.py:cpu", "overrides": args.set, "model": config.model.to_dict(),
      "data": {key: value for key, value in config.data.to_dict().items()
               if "shift" in key or "scale" in key},
      "batch_size": config.batch_size, "learning_rate": config.optimizer.learning_rate,
      "steps": args.steps,
      "steps_trained": steps_trained, "num_speakers": args.num_speakers,
      "clips_per_speaker": args.clips_per_speaker, "test_clips": len(results["clips"]),
      "seed": args.seed, "pose_source": "record annotations (SynthTalk ground truth)",
      "train_seconds": train_seconds, "evaluate_seconds": time.perf_counter() - start,
      "devices": [str(device) for device in jax.devices()][:1],
      "espeak": synthtalk.espeak_available()}
  with open(os.path.join(args.workdir, "capp_synthtalk.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(json.dumps({key: value for key, value in results.items() if key != "clips"}, indent=2))
  return results


if __name__ == "__main__":
  main()
