"""Stage 2's rendered samples: a few held-out clips generated, drawn by stage 1 and scored.

`vasa_jax.trainers.motion` calls a `SampleEvaluator` every `eval_every_steps` when
`config.eval.num_clips` > 0:
  1. the first `eval.num_clips` clips of `config.data.eval_split`, each cut to its first
     `eval.clip_seconds`, are generated from their own audio features, main gaze and distance by
     `MotionSampler` with the EMA weights (the config's sampling settings, seed `config.seed`);
  2. with a stage-1 run to render with (`eval.latent_checkpoint`, else the run the motion
     manifest names: `data_prep.extract_motion` records the run that made the data), each clip's
     first frame (read from `eval.clip_data_dir`, else the clip shards the manifest names) is
     encoded once and the generated motion is decoded (`talking_head.FaceRenderer`);
  3. the writer gets
       eval/samples: one image strip, a row per clip: its source frame, then
         `eval.strip_frames` evenly spaced rendered frames;
       eval/face_found_rate, eval/mouth_envelope_correlation (and its _clips count),
         eval/shuffled_audio_correlation, and for SynthTalk eval/mouth_truth_correlation:
         `vasa_jax.evaluators.lip_sync` on the rendered frames against the clip's speech (NaN
         where the tracker finds too few faces);
       eval/delta_pose_degrees: Delta P, the mean absolute frame-to-frame change of the
         generated z_pose's yaw, pitch and roll in degrees (over frames, angles and clips), and
         eval/delta_pose_degrees_real, the same of the clips' extracted motion (the reference);
       with `eval.syncnet` weights, eval/sync_confidence and eval/sync_distance (SyncNet's Sc and
         SD as `python -m vasa_jax.evaluate` scores them: faces tracked and cropped, then
         `SyncNetInstance.evaluate`), and with `eval.capp_checkpoint`, eval/capp (CAPP of the
         tracked head pose against the speech); each the mean over the clips it can score
         (NaN for none);
     and with `eval.write_videos` each rendered clip with its speech goes to
     `<video_dir>/<step>/<i>_<clip id>.mp4`.
Without a stage-1 run or clip shards (a warning says which, once) only the Delta P scalars are
written. Sampling, rendering and scoring run on process 0; every process joins in gathering the
EMA weights.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from vasa_jax.data import face_tracker
from vasa_jax.data import input_pipeline
from vasa_jax.data import media
from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.evaluators import capp as capp_lib
from vasa_jax.evaluators import lip_sync
from vasa_jax.evaluators import mfcc
from vasa_jax.evaluators import syncnet as sync_lib
from vasa_jax.evaluators import tracking
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.inference import talking_head
from vasa_jax.models import pretrained
from vasa_jax.models import syncnet as syncnet_model

POSE_ANGLES = slice(0, 3)  # z_pose's yaw, pitch, roll (radians) in a motion frame


def delta_pose_degrees(motion: np.ndarray) -> float:
  """Delta P of motion [T, M]: mean |change| of z_pose's yaw, pitch and roll between adjacent
  frames, in degrees (over frames and the three angles)."""
  return float(np.mean(np.abs(np.diff(np.rad2deg(motion[:, POSE_ANGLES]), axis=0))))


def image_strip(sources: np.ndarray, clips: list[np.ndarray], num_frames: int) -> np.ndarray:
  """uint8 [C, S, S, 3] source frames and C rendered clips [T_i, S, S, 3] -> one uint8
  [C * S, (1 + num_frames) * S, 3] image: a row per clip, the source then `num_frames` evenly
  spaced frames."""
  rows = []
  for source, frames in zip(sources, clips):
    picks = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    rows.append(np.concatenate([source, *frames[picks]], axis=1))
  return np.concatenate(rows, axis=0)


def host_copy(tree: Any) -> Any:
  """A pytree of (possibly sharded, multi-process) jax.Arrays as numpy arrays on every process
  (a collective when some array is not fully addressable: every process must call it)."""
  if all(getattr(leaf, "is_fully_addressable", True) for leaf in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _true_mouth(record: dict, num_frames: int) -> Optional[np.ndarray]:
  """SynthTalk's ground-truth mouth opening [T] of a motion record, or None."""
  truth = record.get("ground_truth") or {}
  names = list(truth.get("factor_names", ()))
  if "mouth_open" not in names:
    return None
  return np.asarray(truth["factors"], np.float64)[:num_frames, names.index("mouth_open")]


class SampleEvaluator:
  """Generates, renders and scores `config.eval.num_clips` held-out clips (see the module doc).

  config: the stage-2 config; video_dir: where `eval.write_videos` puts the mp4s (None: none).
  """

  def __init__(self, config, video_dir: Optional[str] = None):
    self.config = config
    self.fps = float(config.fps)
    self.video_dir = video_dir if config.eval.write_videos else None
    split = config.data.eval_split
    num_clips = len(input_pipeline.ClipIndex.load(config.data_dir, split).clip_ids)
    count = min(config.eval.num_clips, num_clips)
    max_frames = max(1, round(config.eval.clip_seconds * self.fps))
    # Each clip: its id, audio features [T, A], speech [N], controls, extracted motion [T, M].
    self.clips = []
    for record in input_pipeline.split_records(config.data_dir, split, range(count)):
      frames = min(int(record["num_frames"]), max_frames)
      samples = round(frames * record["audio_sample_rate"] / self.fps)
      self.clips.append({
          "clip_id": record["clip_id"], "num_frames": frames,
          "audio_features": np.asarray(record["audio_features"][:frames], np.float32),
          "speech": np.asarray(record["audio"][:samples], np.float32) / 32768.0,
          "sample_rate": int(record["audio_sample_rate"]),
          "gaze": np.asarray(record["gaze_main"], np.float32),
          "distance": float(record["distance_main"]),
          "emotion": (np.asarray(record["emotion"], np.float32)
                      if config.model.emotion_dim else None),
          "motion": np.asarray(record["motion"][:frames], np.float32),
          "true_mouth": _true_mouth(record, frames)})
    self.renderer, self.sources = self._renderer_and_sources(config, split)
    self._sampler = None  # built at the first call, from the state's statistics
    self._tracker = None
    # The optional scorers of the rendered clips (a bad weight file fails here, at setup).
    self.syncnet = None
    if config.eval.get("syncnet"):
      self.syncnet = sync_lib.SyncNetScorer(
          pretrained.load_syncnet(config.eval.syncnet, width=config.eval.syncnet_width),
          syncnet_model.SyncNet(width=config.eval.syncnet_width))
    self.capp = (capp_lib.CAPPScorer(config.eval.capp_checkpoint)
                 if config.eval.get("capp_checkpoint") else None)

  def _renderer_and_sources(self, config, split: str):
    """(FaceRenderer, uint8 [C, S, S, 3] first frames) or (None, None) with a warning."""
    manifest = records.read_manifest(config.data_dir)
    latent = config.eval.latent_checkpoint or manifest.get("motion", {}).get(
        "latent_checkpoint", "")
    clip_dir = config.eval.clip_data_dir or manifest.get("settings", {}).get("clip_data_dir", "")
    missing = [f"{what} {path!r} ({field} or the motion manifest)" for what, path, field in (
        ("stage-1 run", latent, "config.eval.latent_checkpoint"),
        ("clip shards", clip_dir, "config.eval.clip_data_dir")) if not os.path.isdir(path)]
    if missing:
      logging.warning("stage-2 evaluation renders no frames (Delta P only): no %s",
                      " and no ".join(missing))
      return None, None
    renderer = talking_head.FaceRenderer(latent)
    if motion_records.POSE_DIM + renderer.dyn_dim != config.model.motion_dim:
      raise ValueError(
          f"the stage-1 run {latent!r} renders motion of {motion_records.POSE_DIM} + "
          f"{renderer.dyn_dim} values, config.model.motion_dim is {config.model.motion_dim}: "
          "set config.eval.latent_checkpoint to the run that made the motion data")
    index = input_pipeline.ClipIndex.load(clip_dir, split)
    positions = []
    for clip in self.clips:
      if clip["clip_id"] not in index.clip_ids:
        raise ValueError(f"clip {clip['clip_id']!r} of {config.data_dir!r} is not in split "
                         f"{split!r} of the clip shards {clip_dir!r}")
      positions.append(index.clip_ids.index(clip["clip_id"]))
    sources = np.stack([input_pipeline.decode_frame(record["frames"][0], renderer.image_size)
                        for record in input_pipeline.split_records(clip_dir, split, positions)])
    return renderer, sources

  def _generate(self, params: Any, statistics: Any) -> list[np.ndarray]:
    """Motion [T, M] of each clip from the EMA weights."""
    if self._sampler is None:
      self._sampler = sampler_lib.MotionSampler(self.config, params, statistics)
    else:
      self._sampler.params = jax.device_put(params)
    return [self._sampler.generate(clip["audio_features"], gaze=clip["gaze"],
                                   distance=clip["distance"], emotion=clip["emotion"],
                                   seed=self.config.seed) for clip in self.clips]

  def __call__(self, ema_params: Any, statistics: Any, step: int, writer) -> None:
    params, statistics = host_copy((ema_params, statistics))
    if jax.process_index() != 0:
      return
    generated = self._generate(params, statistics)
    scalars = {
        "eval/delta_pose_degrees": float(np.mean([delta_pose_degrees(m) for m in generated])),
        "eval/delta_pose_degrees_real": float(np.mean(
            [delta_pose_degrees(clip["motion"]) for clip in self.clips]))}
    if self.renderer is not None:
      rendered = [np.concatenate(list(self.renderer.render(self.renderer.encode(source), motion)))
                  for source, motion in zip(self.sources, generated)]  # [T, S, S, 3] each
      scalars.update(self._lip_sync(rendered))
      if self.syncnet is not None or self.capp is not None:
        scalars.update(self._sync_and_capp(rendered))
      writer.write_images(step, {"eval/samples": image_strip(
          self.sources, rendered, self.config.eval.strip_frames)[None]})
      if self.video_dir:
        self._write_videos(rendered, step)
    writer.write_scalars(step, scalars)

  def _lip_sync(self, rendered: list[np.ndarray]) -> dict[str, float]:
    """`lip_sync` scores of the rendered clips, averaged (`lip_sync.summarise`), as eval/..."""
    if self._tracker is None:
      self._tracker = face_tracker.FaceTracker()
    tracks = [lip_sync.track_mouth(frames, self._tracker) for frames in rendered]
    per_clip = [lip_sync.lip_sync_scores(track, clip["speech"], self.fps, clip["true_mouth"],
                                         clip["sample_rate"])
                for track, clip in zip(tracks, self.clips)]
    control = lip_sync.shuffled_control(tracks, [clip["speech"] for clip in self.clips],
                                        self.fps, self.clips[0]["sample_rate"])
    return {f"eval/{name}": float(value)
            for name, value in lip_sync.summarise(per_clip, control).items()}

  def _sync_and_capp(self, rendered: list[np.ndarray]) -> dict[str, float]:
    """SyncNet's Sc and SD and CAPP of the rendered clips (those configured), each averaged
    over the clips with a tracked face long enough for it, as eval/..."""
    values = {name: [] for name in ("sync_confidence", "sync_distance", "capp")}
    for frames, clip in zip(rendered, self.clips):
      track = tracking.track(frames, self.fps)
      if track.skip_reason is not None:
        continue
      if self.syncnet is not None:
        crops = sync_lib.crop_faces(frames, track.found, track.landmarks)
        audio = sync_lib.clip_audio(mfcc.int16_samples(clip["speech"]), crops.first, crops.last)
        if sync_lib.num_windows(len(crops.crops), len(audio)) >= 1:
          scores = self.syncnet.score(crops.crops, audio)
          values["sync_confidence"].append(scores.confidence)
          values["sync_distance"].append(scores.distance)
      if self.capp is not None:
        pose = capp_lib.pose_features(track.head_pose, track.landmarks, track.distance,
                                      frames.shape[1], frames.shape[2])
        capp = self.capp.score(clip["speech"], pose)
        if capp is not None:
          values["capp"].append(capp)
    configured = {"sync_confidence": self.syncnet, "sync_distance": self.syncnet,
                  "capp": self.capp}
    return {f"eval/{name}": float(np.mean(found)) if found else float("nan")
            for name, found in values.items() if configured[name] is not None}

  def _write_videos(self, rendered: list[np.ndarray], step: int) -> None:
    directory = os.path.join(self.video_dir, str(step))
    os.makedirs(directory, exist_ok=True)
    for index, (frames, clip) in enumerate(zip(rendered, self.clips)):
      name = f"{index}_{clip['clip_id'].replace('/', '_')}.mp4"
      media.write_video(os.path.join(directory, name), frames, self.fps, audio=clip["speech"],
                        sample_rate=clip["sample_rate"])
