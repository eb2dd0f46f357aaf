"""Small hand-made stage-2 data directories (`vasa_jax.data.motion_records`) with learnable motion.

Each clip's audio features are a smooth random signal; its motion is a fixed function of them
(a random linear map through tanh) plus an offset set by the clip's main gaze, so a model that
reads the audio and gaze conditions can predict the motion. `distance_main` is the clip's number
plus 1, which tells the clip of a batch example.
"""

from __future__ import annotations

import os

import numpy as np

from tests import fake_clips
from vasa_jax.data import motion_records
from vasa_jax.data import records

FPS = 25.0
SAMPLES_PER_FRAME = int(records.AUDIO_SAMPLE_RATE / FPS)


def make_motion_record(clip_number: int, speaker: str, num_frames: int, motion_dim: int,
                       audio_dim: int, emotion_dim: int) -> dict:
  """One motion record whose motion [T, M] follows from its audio features [T, A] and gaze."""
  rng = np.random.default_rng(1000 + clip_number)
  mapping = np.random.default_rng(0).normal(size=(audio_dim, motion_dim)) / np.sqrt(audio_dim)
  gaze_direction = np.random.default_rng(1).normal(size=(2, motion_dim))
  # Smooth features: a random walk over frames, standardised per dimension.
  walk = np.cumsum(rng.normal(size=(num_frames, audio_dim)), axis=0)
  audio_features = (walk - walk.mean(0)) / (walk.std(0) + 1e-6)  # [T, A]
  gaze = rng.normal(scale=10.0, size=(num_frames, 2)).astype(np.float32)  # [T, 2] degrees
  gaze_main = np.median(gaze, axis=0).astype(np.float32)  # [2]
  motion = np.tanh(audio_features @ mapping) + 0.05 * gaze_main @ gaze_direction  # [T, M]
  frame_numbers = np.arange(num_frames, dtype=np.float32)
  return dict(
      format_version=motion_records.MOTION_FORMAT_VERSION,
      record_kind=motion_records.RECORD_KIND,
      clip_id=f"{speaker}/clip/{clip_number:05d}", speaker_id=speaker, source="synthtalk",
      source_path="", fps=FPS, num_frames=num_frames,
      motion=motion.astype(np.float32),
      audio_features=audio_features.astype(np.float16),
      # Noise whose loudness changes from frame to frame: a speech envelope to correlate with.
      audio=(rng.uniform(500, 8000, size=(num_frames, 1)) * rng.uniform(
          -1, 1, size=(num_frames, SAMPLES_PER_FRAME))).astype(np.int16).reshape(-1),
      audio_sample_rate=records.AUDIO_SAMPLE_RATE,
      gaze=gaze, gaze_main=gaze_main,
      distance=np.full(num_frames, clip_number + 1.0, np.float32),
      distance_main=np.float32(clip_number + 1.0),
      emotion=rng.uniform(size=emotion_dim).astype(np.float32),
      head_pose=np.stack([frame_numbers, frame_numbers, frame_numbers], axis=1))


def make_motion_data_dir(path: str, splits=(("train", 4), ("test", 2)), motion_dim: int = 23,
                         audio_dim: int = 40, emotion_dim: int = 8, num_frames: int = 60,
                         clips_per_shard: int = 3, latent_checkpoint: str = "",
                         clip_data_dir: str = "") -> dict[str, list[dict]]:
  """Writes shards + manifest, one speaker per clip; returns each split's records in read order.

  splits: (split name, number of clips) pairs; clips are numbered across splits from 0.
  latent_checkpoint: the stage-1 run the manifest names as the data's maker.
  clip_data_dir: when given, also writes the clips' records there (`fake_clips.make_record`
    frames of 16 px, same clip ids, splits and frame counts), and the manifest names it as the
    clip shards the motion came from.
  """
  os.makedirs(path, exist_ok=True)
  split_records, split_entries = {}, {}
  clip_number = 0
  for split, num_clips in splits:
    clip_records = []
    for _ in range(num_clips):
      clip_records.append(make_motion_record(clip_number, f"spk{clip_number}", num_frames,
                                             motion_dim, audio_dim, emotion_dim))
      clip_number += 1
    num_shards = -(-num_clips // clips_per_shard)
    names = [records.shard_name(split, shard, num_shards) for shard in range(num_shards)]
    for shard, name in enumerate(names):
      chunk = clip_records[shard * clips_per_shard:(shard + 1) * clips_per_shard]
      records.write_shard(os.path.join(path, name),
                          [motion_records.encode_motion_record(r) for r in chunk])
    split_records[split] = clip_records
    split_entries[split] = dict(shards=names, clips=[
        dict(clip_id=r["clip_id"], speaker_id=r["speaker_id"], num_frames=r["num_frames"])
        for r in clip_records])
    if clip_data_dir:
      os.makedirs(clip_data_dir, exist_ok=True)
      for shard, name in enumerate(names):
        chunk = clip_records[shard * clips_per_shard:(shard + 1) * clips_per_shard]
        records.write_shard(os.path.join(clip_data_dir, name), [
            entry for r in chunk for entry in records.encode_clip(fake_clips.make_record(
                int(r["distance_main"]) - 1, r["speaker_id"], num_frames))])
  settings = {"clip_data_dir": clip_data_dir} if clip_data_dir else {}
  manifest = dict(source="synthtalk", fps=FPS, audio_sample_rate=records.AUDIO_SAMPLE_RATE,
                  splits=split_entries, num_inputs=clip_number, skipped={}, skipped_examples={})
  if clip_data_dir:
    records.write_manifest(clip_data_dir, dict(manifest, resolution=16, settings={}))
  records.write_manifest(path, dict(
      manifest, settings=settings, record_kind=motion_records.RECORD_KIND,
      format_version=motion_records.MOTION_FORMAT_VERSION,
      motion=dict(pose_dim=motion_records.POSE_DIM, dyn_dim=motion_dim - motion_records.POSE_DIM,
                  motion_dim=motion_dim, latent_checkpoint=latent_checkpoint, latent_step=0),
      audio=dict(features="log_mel", dim=audio_dim, num_mels=audio_dim)))
  return split_records
