"""Does generated motion, and the video rendered from it, follow the speech and the gaze?

Scores a trained pair of stages on held-out SynthTalk clips, whose ground truth (mouth opening,
gaze) is known. Used by `python -m vasa_jax.demo` and `experiments/motion_synthtalk.py`.

Motion (`evaluate_motion`): a linear probe (closed-form ridge regression) maps a motion frame
[z_pose, z_dyn] to SynthTalk's mouth opening and camera-space gaze; it is fitted on the training
clips' extracted motion, and its R^2 on the held-out clips' real motion is the ceiling of what it
can read. On each held-out clip's speech the sampler generates motion (the clip's own gaze and
distance as controls) and the report gives
  - mouth: Pearson correlation between the probe's mouth opening of the generated motion and
    the clip's ground-truth mouth opening, and against its speech envelope; a shuffled-audio
    control generates from another clip's speech and correlates with this clip's truth;
  - Delta P (VASA-1): mean angle change of z_pose's yaw, pitch, roll between adjacent frames
    (degrees), generated vs the real clips' extracted motion;
  - continuity: mean motion step across window boundaries vs within windows;
  - gaze: error (degrees) between the requested gaze and the main direction of the probe's gaze
    of the generated motion, with the gaze guidance scale at the config's value, at 0, and with
    the gaze condition dropped.
Emotion (`evaluate_emotion`, for a motion model conditioned on emotion scores and SynthTalk made
with --expression_fraction > 0): a second ridge probe maps a motion frame to the smile and brow
raise factors; each held-out clip is generated with the emotion "happy", "surprise" and "neutral"
(`emotion_control`) and the report gives the probe's mean smile and brow raise of each, the
fraction of clips where "happy" smiles more than "neutral" (and "surprise" raises the brows
more), and the probe's R^2 on the real held-out motion (what it can read at best).
Pixels (`evaluate_pixels`): the generated motion is rendered on the clip's first frame and the
project's tracker reads the mouth opening from the frames (`lip_sync`): its correlation with the
speech envelope and with the ground-truth mouth, the face-found rate, next to the same measures on
the real clip's frames and a shuffled-audio control (each clip's rendered mouth against another
clip's speech).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from array_record.python import array_record_module

from vasa_jax.data import extract_motion
from vasa_jax.data import media
from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.data.synthtalk import render as render_lib
from vasa_jax.evaluators import lip_sync
from vasa_jax.inference import emotion_control
from vasa_jax.inference import sampler as sampler_lib

MOUTH_INDEX = render_lib.FACTOR_NAMES.index("mouth_open")
# Probe targets: mouth opening and the camera-space gaze (theta, phi) of each frame.
PROBE_TARGETS = ("mouth_open", "gaze_theta", "gaze_phi")
RIDGE_ALPHA = 1e-2
# Expression probe targets (SynthTalk factors) and the emotion that should raise each.
EXPRESSION_TARGETS = {"smile": "happy", "brow_raise": "surprise"}


def read_motion_split(data_dir: str, split: str) -> list[dict]:
  """Every motion record of a split of an `extract_motion` output directory."""
  manifest = records.read_manifest(data_dir)
  clips = []
  for path in records.split_shard_paths(data_dir, manifest, split):
    reader = array_record_module.ArrayRecordReader(path)
    try:
      clips += [motion_records.decode_motion_record(data) for data in reader.read_all()]
    finally:
      reader.close()
  return clips


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
  """Pearson correlation; 0 when either side is constant."""
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


def shuffled_partner(index: int, count: int) -> int:
  """The clip whose speech drives clip `index`'s shuffled-audio control (never itself)."""
  return (index + 1 + count // 2) % count if count > 1 else index


def _mean(values) -> float:
  return round(float(np.mean(values)), 3)


def envelope_of(clip: dict) -> np.ndarray:
  """The speech envelope [T] of a motion record at its frame rate."""
  return media.speech_envelope(np.asarray(clip["audio"], np.float32) / 32768.0,
                               int(clip["num_frames"]), float(clip["fps"]),
                               int(clip["audio_sample_rate"]))


def evaluate_motion(sampler: sampler_lib.MotionSampler, train_clips: Sequence[dict],
                    test_clips: Sequence[dict], seed: int = 0
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(report, generated motion [T, M] per held-out clip id); see the module doc."""
  probe = RidgeProbe(np.concatenate([clip["motion"] for clip in train_clips]),
                     np.concatenate([probe_targets(clip) for clip in train_clips]))
  test_motion = np.concatenate([clip["motion"] for clip in test_clips])
  test_targets = np.concatenate([probe_targets(clip) for clip in test_clips])
  mouth, mouth_envelope, shuffled, real_mouth = [], [], [], []
  delta_generated, delta_real, across, within, real_steps = [], [], [], [], []
  gaze_errors = {"guided": [], "unguided": [], "dropped": []}
  generated_motion = {}
  for index, clip in enumerate(test_clips):
    features = np.asarray(clip["audio_features"], np.float32)
    truth_mouth = probe_targets(clip)[:, 0]
    controls = dict(gaze=clip["gaze_main"], distance=float(clip["distance_main"]), seed=seed)
    generated = sampler.generate(features, **controls)  # [T, M]
    generated_motion[clip["clip_id"]] = generated
    other = test_clips[shuffled_partner(index, len(test_clips))]
    shuffled_motion = sampler.generate(
        fit_to_length(np.asarray(other["audio_features"], np.float32), len(features)), **controls)
    generated_mouth = probe(generated)[:, 0]
    mouth.append(correlation(generated_mouth, truth_mouth))
    mouth_envelope.append(lip_sync.best_lag_correlation(generated_mouth, envelope_of(clip))[0])
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
  report = {
      "num_test_clips": len(test_clips),
      "num_test_speakers": len({clip["speaker_id"] for clip in test_clips}),
      "probe_r_squared_on_real_test_motion": dict(zip(PROBE_TARGETS,
                                                      probe.r_squared(test_motion, test_targets))),
      "mouth_correlation": {
          "generated": _mean(mouth), "shuffled_audio_control": _mean(shuffled),
          "generated_vs_speech_envelope": _mean(np.nan_to_num(mouth_envelope)),
          "real_motion_through_probe": _mean(real_mouth),
          "fraction_of_clips_generated_beats_control": _mean(np.greater(mouth, shuffled))},
      "delta_p_degrees": {"generated": _mean(delta_generated), "real": _mean(delta_real)},
      "continuity": {"mean_step_across_window_boundaries": _mean(across),
                     "mean_step_within_windows": _mean(within),
                     "mean_step_of_real_motion": _mean(real_steps), "num_boundaries": len(across)},
      "gaze_error_degrees": {
          "with_gaze_guidance": _mean(gaze_errors["guided"]),
          "without_gaze_guidance": _mean(gaze_errors["unguided"]),
          "gaze_condition_dropped": _mean(gaze_errors["dropped"])},
  }
  return report, generated_motion


def has_expressions(clips: Sequence[dict]) -> bool:
  """Whether SynthTalk clips carry expression factors and some clip has an expression."""
  return any(clip.get("ground_truth", {}).get("expression", "none") != "none"
             for clip in clips)


def expression_targets(clip: dict) -> np.ndarray:
  """[T, 2]: the ground-truth smile and brow raise factors of a SynthTalk motion record."""
  truth = clip["ground_truth"]
  names = list(truth["factor_names"])
  factors = np.asarray(truth["factors"])
  return factors[:, [names.index(name) for name in EXPRESSION_TARGETS]]


def evaluate_emotion(sampler: sampler_lib.MotionSampler, train_clips: Sequence[dict],
                     test_clips: Sequence[dict], seed: int = 0) -> dict[str, Any]:
  """Does the emotion control move the generated expression? See the module doc."""
  probe = RidgeProbe(np.concatenate([clip["motion"] for clip in train_clips]),
                     np.concatenate([expression_targets(clip) for clip in train_clips]))
  emotions = ("neutral", *EXPRESSION_TARGETS.values())
  probed = {name: [] for name in emotions}  # per clip: mean probed [smile, brow raise]
  for clip in test_clips:
    features = np.asarray(clip["audio_features"], np.float32)
    for name in emotions:
      motion = sampler.generate(features, gaze=clip["gaze_main"],
                                distance=float(clip["distance_main"]), seed=seed,
                                emotion=emotion_control.parse_emotion(name))
      probed[name].append(probe(motion).mean(0))
  probed = {name: np.stack(values) for name, values in probed.items()}  # [N, 2] each
  real_motion = np.concatenate([clip["motion"] for clip in test_clips])
  real_targets = np.concatenate([expression_targets(clip) for clip in test_clips])
  report = {"num_test_clips": len(test_clips),
            "probe_r_squared_on_real_test_motion": dict(zip(
                EXPRESSION_TARGETS, probe.r_squared(real_motion, real_targets)))}
  for index, (target, emotion) in enumerate(EXPRESSION_TARGETS.items()):
    raised, neutral = probed[emotion][:, index], probed["neutral"][:, index]
    report[target] = {f"generated_{emotion}": _mean(raised), "generated_neutral": _mean(neutral),
                      f"fraction_of_clips_{emotion}_above_neutral": _mean(raised > neutral)}
  return report


def evaluate_pixels(render_fn, test_clips: Sequence[dict], frames: dict[str, np.ndarray],
                    generated_motion: dict[str, np.ndarray]
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(report, rendered frames uint8 [T, S, S, 3] per clip id); see the module doc.

  render_fn(first_frame uint8 [S, S, 3], motion [T, M]) -> frames uint8 [T, S, S, 3];
  frames: each held-out clip's real frames uint8 [T, S, S, 3] at the model's size.
  """
  rendered, generated_scores, real_scores, tracks, waveforms = {}, [], [], [], []
  per_clip = {}
  for clip in test_clips:
    clip_id = clip["clip_id"]
    real = frames[clip_id]
    video = render_fn(real[0], generated_motion[clip_id])
    rendered[clip_id] = video
    waveform = np.asarray(clip["audio"], np.float32) / 32768.0
    truth = probe_targets(clip)[:, 0]
    track = lip_sync.track_mouth(video)
    scores = lip_sync.lip_sync_scores(track, waveform, float(clip["fps"]), truth)
    real_clip_scores = lip_sync.lip_sync_scores(lip_sync.track_mouth(real), waveform,
                                                float(clip["fps"]), truth)
    generated_scores.append(scores)
    real_scores.append(real_clip_scores)
    tracks.append(track)
    waveforms.append(waveform)
    per_clip[clip_id] = {"generated": _rounded(scores), "real": _rounded(real_clip_scores)}
  control = lip_sync.shuffled_control(tracks, waveforms, float(test_clips[0]["fps"]))
  report = {"generated": _rounded(lip_sync.summarise(generated_scores, control)),
            "real_clips": _rounded(lip_sync.summarise(real_scores, [])),
            "per_clip": per_clip}
  return report, rendered


def _rounded(scores: dict[str, float]) -> dict[str, float]:
  return {key: (round(value, 3) if isinstance(value, float) else value)
          for key, value in scores.items()}


def psnr_db(generated: np.ndarray, real: np.ndarray) -> float:
  """PSNR (dB) of uint8 images against uint8 references of the same shape."""
  mse = np.mean((generated.astype(np.float64) - real.astype(np.float64)) ** 2)
  return float(10.0 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def evaluate_reconstruction(render_fn, test_clips: Sequence[dict],
                            frames: dict[str, np.ndarray]) -> dict[str, Any]:
  """Stage 1 alone on held-out speakers: each clip's real motion (extracted [z_pose, z_dyn])
  rendered on its first frame: PSNR against the real frames, and the pixel lip sync of that
  render (the ceiling of what generated motion can reach through this stage 1)."""
  psnrs, scores, tracks, waveforms = [], [], [], []
  for clip in test_clips:
    real = frames[clip["clip_id"]]
    video = render_fn(real[0], np.asarray(clip["motion"], np.float32))
    count = min(len(video), len(real))
    psnrs.append(psnr_db(video[:count], real[:count]))
    waveform = np.asarray(clip["audio"], np.float32) / 32768.0
    track = lip_sync.track_mouth(video)
    scores.append(lip_sync.lip_sync_scores(track, waveform, float(clip["fps"]),
                                           probe_targets(clip)[:, 0]))
    tracks.append(track)
    waveforms.append(waveform)
  control = lip_sync.shuffled_control(tracks, waveforms, float(test_clips[0]["fps"]))
  return {"psnr_db": _mean(psnrs), "num_clips": len(psnrs),
          "pixels": _rounded(lip_sync.summarise(scores, control))}


def heldout_frames(synthtalk_dir: str, clip_ids: set[str], split: str = "test"
                   ) -> dict[str, np.ndarray]:
  """The real frames uint8 [T, S, S, 3] of the clips `clip_ids` of a SynthTalk split."""
  manifest = records.read_manifest(synthtalk_dir)
  frames = {}
  for path in records.split_shard_paths(synthtalk_dir, manifest, split):
    for record in records.read_shard(path):
      if record["clip_id"] in clip_ids:
        frames[record["clip_id"]] = np.stack([media.decode_jpeg(f) for f in record["frames"]])
  return frames


def spread_over_speakers(clips: Sequence[dict], count: Optional[int]) -> list[dict]:
  """Up to `count` clips (None: all), taking each speaker's first clip before any second one."""
  by_speaker: dict[str, list[dict]] = {}
  for clip in clips:
    by_speaker.setdefault(clip["speaker_id"], []).append(clip)
  ordered = [clip for rank in range(max(map(len, by_speaker.values()), default=0))
             for speaker_clips in by_speaker.values() if rank < len(speaker_clips)
             for clip in [speaker_clips[rank]]]
  return ordered if count is None else ordered[:count]


def evaluate_runs(head, motion_data_dir: str, synthtalk_dir: str, seed: int = 0,
                  max_clips: Optional[int] = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """Every score of this module for a trained pair of stages on held-out SynthTalk clips.

  head: a `talking_head.TalkingHead` of the two runs; motion_data_dir: their `extract_motion`
  output; synthtalk_dir: the SynthTalk set it was extracted from; max_clips: held-out clips
  scored (None: all; `spread_over_speakers` picks them). Returns (report, details):
  details holds the held-out motion records ("test_clips"), the rendered generated videos and
  the real frames per clip id ("rendered", "real"), for videos and figures.
  """
  train_clips = read_motion_split(motion_data_dir, "train")
  test_clips = spread_over_speakers(read_motion_split(motion_data_dir, "test"), max_clips)
  real = heldout_frames(synthtalk_dir, {clip["clip_id"] for clip in test_clips})
  motion_report, generated_motion = evaluate_motion(head.sampler, train_clips, test_clips, seed)

  def render(first_frame: np.ndarray, motion: np.ndarray) -> np.ndarray:
    return np.concatenate(list(head.render(head.encode(first_frame), motion)))

  pixel_report, rendered = evaluate_pixels(render, test_clips, real, generated_motion)
  if (head.sampler.emotion_dim == len(records.EMOTION_CLASSES) and has_expressions(train_clips)
      and has_expressions(test_clips)):
    motion_report["emotion"] = evaluate_emotion(head.sampler, train_clips, test_clips, seed)
  report = {"heldout_reconstruction": evaluate_reconstruction(render, test_clips, real),
            "motion": motion_report,
            "pixels": {key: value for key, value in pixel_report.items() if key != "per_clip"},
            "pixels_per_clip": pixel_report["per_clip"]}
  return report, {"test_clips": test_clips, "rendered": rendered, "real": real}
