"""Stage-2 learning check on SynthTalk: does generated motion follow the speech and the gaze?

  python experiments/motion_synthtalk.py --workdir=/tmp/motion_synthtalk

1. Generates a SynthTalk set (64 px; speakers split into train and held-out test speakers).
2. Trains stage 1 (`configs/latent.py:small`, the recipe of experiments/latent_synthtalk.py;
   perceptual terms off: no pretrained networks here) for `--latent_steps`, extracts stage-2
   shards with `data_prep.extract_motion` (log-mel speech features: no pretrained Wav2Vec2
   exists here), and trains stage 2 (`configs/motion.py:tiny`) for `--motion_steps`. Every step
   is skipped when its output is already complete in the workdir (reruns resume).
3. A linear probe (ridge regression) maps a motion frame [z_pose, z_dyn] to SynthTalk's
   ground-truth factors (mouth opening, camera-space gaze), fitted on the TRAIN clips' extracted
   motion; its R^2 on the test clips' real motion is the ceiling of what the probe can read.
4. On the held-out speakers' speech (never trained on), generates motion with the sampler
   (50 DDIM steps, the config's guidance scales) and reports:
   - mouth: Pearson correlation, per clip, between the probe's mouth opening of the generated
     motion and the ground-truth mouth opening of that speech; the shuffled-audio control
     generates from another clip's speech and correlates with this clip's truth.
   - Delta P (VASA-1): mean angle change of the head pose (z_pose's yaw, pitch, roll, degrees)
     between adjacent frames, generated vs the real clips' extracted motion.
   - continuity: mean motion step (L2 norm of the frame-to-frame change of [z_pose, z_dyn])
     across window boundaries vs within windows, and that of the real extracted motion.
   - gaze: error (degrees) between the requested gaze (the clip's own main gaze) and the main
     direction of the probe's per-frame gaze of the generated motion, with the gaze guidance
     scale at the config's 1.0 and at 0, and with the gaze condition dropped.
Writes `motion_synthtalk.json` in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

# The repository root, for its configs/ folder (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import latent as latent_config
from configs import motion as motion_config
from vasa_jax.data import extract_motion
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.data.synthtalk import render as render_lib
from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.trainers import latent as latent_trainer
from vasa_jax.trainers import motion as motion_trainer
from vasa_jax.training import checkpoint
from vasa_jax.training import sharding

MOUTH_INDEX = render_lib.FACTOR_NAMES.index("mouth_open")
# Probe targets: mouth opening and the camera-space gaze (theta, phi) of each frame.
PROBE_TARGETS = ("mouth_open", "gaze_theta", "gaze_phi")
RIDGE_ALPHA = 1e-2


def one_device_mesh():
  return sharding.create_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])


def train_stage(trainer, config, workdir: str) -> float:
  """Trains (or resumes, or skips when finished) one stage; returns the seconds spent."""
  start = time.perf_counter()
  trainer.train_and_evaluate(config, workdir, one_device_mesh())
  return time.perf_counter() - start


def read_motion_split(data_dir: str, split: str) -> list[dict]:
  manifest = records.read_manifest(data_dir)
  return [motion_records.decode_motion_record(data)
          for path in records.split_shard_paths(data_dir, manifest, split)
          for data in _raw_records(path)]


def _raw_records(path: str):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  reader = array_record_module.ArrayRecordReader(path)
  try:
    yield from reader.read_all()
  finally:
    reader.close()


def probe_targets(clip: dict) -> np.ndarray:
  """[T, 3]: ground-truth mouth opening and the camera-space gaze (theta, phi) in degrees."""
  factors = np.asarray(clip["ground_truth"]["factors"])
  return np.concatenate([factors[:, MOUTH_INDEX:MOUTH_INDEX + 1], clip["gaze"]], axis=1)


class RidgeProbe:
  """Linear map motion [N, M] -> targets [N, Y] (standardised inputs, closed-form ridge)."""

  def __init__(self, motion: np.ndarray, targets: np.ndarray, alpha: float = RIDGE_ALPHA):
    self.mean, self.std = motion.mean(0), motion.std(0) + 1e-6
    inputs = np.concatenate([(motion - self.mean) / self.std, np.ones((len(motion), 1))], 1)
    gram = inputs.T @ inputs + alpha * len(motion) * np.eye(inputs.shape[1])
    self.weights = np.linalg.solve(gram, inputs.T @ targets)  # [M + 1, Y]

  def __call__(self, motion: np.ndarray) -> np.ndarray:
    inputs = np.concatenate([(motion - self.mean) / self.std, np.ones((len(motion), 1))], 1)
    return inputs @ self.weights

  def r_squared(self, motion: np.ndarray, targets: np.ndarray) -> list[float]:
    residual = ((self(motion) - targets) ** 2).sum(0)
    total = ((targets - targets.mean(0)) ** 2).sum(0)
    return [round(float(value), 3) for value in 1.0 - residual / total]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
  if a.std() < 1e-9 or b.std() < 1e-9:
    return 0.0
  return float(np.corrcoef(a, b)[0, 1])


def delta_pose_degrees(motion: np.ndarray) -> float:
  """VASA-1's Delta P: mean |change| of (yaw, pitch, roll) between adjacent frames, degrees."""
  angles = np.rad2deg(motion[:, :3])
  return float(np.linalg.norm(np.diff(angles, axis=0), axis=1).mean())


def boundary_steps(motion: np.ndarray, window: int) -> tuple[list[float], list[float]]:
  """Motion step norms across window boundaries and within windows."""
  steps = np.linalg.norm(np.diff(motion, axis=0), axis=1)  # steps[i]: frame i -> i + 1
  boundary = np.arange(window - 1, len(steps), window)
  within = np.setdiff1d(np.arange(len(steps)), boundary)
  return steps[boundary].tolist(), steps[within].tolist()


def fit_to_length(features: np.ndarray, num_frames: int) -> np.ndarray:
  """`features` [T', A] tiled or cut to [num_frames, A]."""
  repeats = -(-num_frames // len(features))
  return np.concatenate([features] * repeats, axis=0)[:num_frames]


def evaluate(motion_workdir: str, train_clips: list[dict], test_clips: list[dict],
             seed: int) -> dict:
  config, state, step = checkpoint.restore_for_inference(motion_workdir, "motion")
  sampler = sampler_lib.MotionSampler(config, state["ema_params"], state["statistics"])
  train_motion = np.concatenate([clip["motion"] for clip in train_clips])
  probe = RidgeProbe(train_motion, np.concatenate([probe_targets(c) for c in train_clips]))
  test_motion = np.concatenate([clip["motion"] for clip in test_clips])
  test_targets = np.concatenate([probe_targets(c) for c in test_clips])

  mouth, shuffled, real_mouth = [], [], []
  delta_generated, delta_real, across, within, real_steps = [], [], [], [], []
  gaze_errors = {"guided": [], "unguided": [], "dropped": []}
  for index, clip in enumerate(test_clips):
    features = np.asarray(clip["audio_features"], np.float32)
    truth_mouth = probe_targets(clip)[:, 0]
    controls = dict(gaze=clip["gaze_main"], distance=float(clip["distance_main"]), seed=seed)
    generated = sampler.generate(features, **controls)  # [T, M]
    other = test_clips[(index + 1 + len(test_clips) // 2) % len(test_clips)]
    shuffled_motion = sampler.generate(
        fit_to_length(np.asarray(other["audio_features"], np.float32), len(features)), **controls)
    mouth.append(correlation(probe(generated)[:, 0], truth_mouth))
    shuffled.append(correlation(probe(shuffled_motion)[:, 0], truth_mouth))
    real_mouth.append(correlation(probe(clip["motion"])[:, 0], truth_mouth))
    delta_generated.append(delta_pose_degrees(generated))
    delta_real.append(delta_pose_degrees(clip["motion"]))
    boundary, inside = boundary_steps(generated, sampler.window)
    across += boundary
    within += inside
    real_steps += np.linalg.norm(np.diff(clip["motion"], axis=0), axis=1).tolist()
    for name, kwargs in (("guided", dict(controls)), ("unguided", dict(controls, lambda_gaze=0.0)),
                         ("dropped", dict(controls, gaze=None))):
      gaze = probe(generated if name == "guided" else sampler.generate(features, **kwargs))[:, 1:]
      main = extract_motion.main_gaze_direction(gaze)
      gaze_errors[name].append(float(np.linalg.norm(main - clip["gaze_main"])))
  mean = lambda values: round(float(np.mean(values)), 3)
  return {
      "motion_checkpoint_step": int(step),
      "num_test_clips": len(test_clips),
      "num_test_speakers": len({clip["speaker_id"] for clip in test_clips}),
      "probe_r_squared_on_real_test_motion": dict(zip(PROBE_TARGETS,
                                                      probe.r_squared(test_motion, test_targets))),
      "mouth_correlation": {
          "generated": mean(mouth), "shuffled_audio_control": mean(shuffled),
          "real_motion_through_probe": mean(real_mouth),
          "fraction_of_clips_generated_beats_control": mean(np.greater(mouth, shuffled))},
      "delta_p_degrees": {"generated": mean(delta_generated), "real": mean(delta_real)},
      "continuity": {"mean_step_across_window_boundaries": mean(across),
                     "mean_step_within_windows": mean(within),
                     "mean_step_of_real_motion": mean(real_steps), "num_boundaries": len(across)},
      "gaze_error_degrees": {
          "with_gaze_guidance_1.0": mean(gaze_errors["guided"]),
          "without_gaze_guidance_0.0": mean(gaze_errors["unguided"]),
          "gaze_condition_dropped": mean(gaze_errors["dropped"])},
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--latent_steps", type=int, default=None,
                      help="Stage-1 steps (default: configs/latent.py:small's total_steps).")
  parser.add_argument("--motion_steps", type=int, default=3000)
  parser.add_argument("--num_speakers", type=int, default=40)
  parser.add_argument("--clips_per_speaker", type=int, default=6)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  paths = {name: os.path.join(args.workdir, name)
           for name in ("synthtalk", "latent", "motion_data", "motion")}
  seconds = {}
  if not os.path.exists(os.path.join(paths["synthtalk"], records.MANIFEST_NAME)):
    start = time.perf_counter()
    synthtalk.main([f"--output_dir={paths['synthtalk']}", f"--num_speakers={args.num_speakers}",
                    f"--clips_per_speaker={args.clips_per_speaker}", "--resolution=64",
                    "--min_seconds=3", "--max_seconds=6", "--test_fraction=0.2",
                    f"--seed={args.seed}"])
    seconds["synthtalk"] = time.perf_counter() - start

  latent = latent_config.get_config("small")
  latent_steps = args.latent_steps or latent.total_steps
  latent.update(data_dir=paths["synthtalk"], seed=args.seed, total_steps=latent_steps,
                eval_every_steps=0, checkpoint_every_steps=latent_steps, log_every_steps=100)
  seconds["stage1_training"] = train_stage(latent_trainer, latent, paths["latent"])

  stage2 = motion_config.get_config("tiny")
  stage2.model.motion_dim = motion_config.POSE_DIM + latent.model.dyn_dim  # [z_pose, z_dyn]
  start = time.perf_counter()
  extract_motion.extract(paths["latent"], paths["synthtalk"], paths["motion_data"], stage2)
  seconds["extraction"] = time.perf_counter() - start
  stage2.update(data_dir=paths["motion_data"], seed=args.seed, total_steps=args.motion_steps,
                checkpoint_every_steps=args.motion_steps, eval_every_steps=0)
  seconds["stage2_training"] = train_stage(motion_trainer, stage2, paths["motion"])

  start = time.perf_counter()
  report = evaluate(paths["motion"], read_motion_split(paths["motion_data"], "train"),
                    read_motion_split(paths["motion_data"], "test"), args.seed)
  seconds["evaluation"] = time.perf_counter() - start
  report = {"configs": ["configs/latent.py:small", "configs/motion.py:tiny"],
            "latent_steps": latent_steps, "motion_steps": args.motion_steps,
            "seconds": {name: round(value, 1) for name, value in seconds.items()}, **report}
  with open(os.path.join(args.workdir, "motion_synthtalk.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
