"""The stage-2 record: one clip's motion latents, speech features and control signals.

`data_prep.extract_motion` writes these (one ArrayRecord entry per clip, a msgpack document as a
clip record's header is, shards and `manifest.json` in the same layout as the clip records, the
manifest's "format_version" MOTION_FORMAT_VERSION) and `vasa_jax.trainers.motion` reads them through
`vasa_jax.data.input_pipeline.stage2_iterator`.

Motion record, format version MOTION_FORMAT_VERSION (T frames, N audio samples):

  format_version      int      MOTION_FORMAT_VERSION
  record_kind         str      "motion"
  clip_id, speaker_id, source, source_path   as in the clip record
  fps                 float    frame rate of every per-frame field
  num_frames          int      T
  motion              float32 [T, 7 + dyn_dim]  [z_pose, z_dyn] of each frame from the stage-1
                               encoders (EMA weights); z_pose = yaw, pitch, roll, tx, ty, tz,
                               log scale
  audio_features      float16 [T, A]  speech features (`vasa_jax.data.speech_features`, the kind and
                               settings in the manifest's "audio" entry), one per frame
  audio               int16   [N] the clip's PCM audio, mono, 16 kHz, aligned with frame 0 (kept
                               so features of another kind can be recomputed without the frames)
  audio_sample_rate   int      16000
  gaze                float32 [T, 2]  per-frame gaze (theta, phi) in degrees, camera space
  gaze_main           float32 [2]     the clip's main gaze direction: the centre of the largest
                               cluster of per-frame gaze (VASA-1's clustering)
  distance            float32 [T]     per-frame head distance proxy (clip-record convention)
  distance_main       float32 []      the clip's median distance
  emotion             float32 [E]     the clip's mean emotion coefficients (E = 0 without an
                               emotion model)
  head_pose           float32 [T, 3]  the tracker's yaw, pitch, roll in degrees (for Delta P)
  ground_truth        dict     SynthTalk only: copied from the clip record

Why features and not raw audio are the training input: Wav2Vec2-base is ~95M parameters, about 3x
the motion transformer's compute per window, and it is frozen, so computing its features once at
extraction instead of at every training step removes most of the per-step cost; float16 features
(768 x 2 bytes x 25 fps = 38 KB/s) cost about as much disk as the 16-bit audio (32 KB/s).

Manifest additions (besides the clip manifest's splits/clips/settings):
  "record_kind": "motion",
  "motion": {"pose_dim": 7, "dyn_dim": int, "motion_dim": int, "latent_checkpoint": str,
             "latent_step": int},
  "audio": {"features": str, "dim": int, plus the `config.audio` fields used}.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flax import serialization

from vasa_jax.data import records

MOTION_FORMAT_VERSION = 1
RECORD_KIND = "motion"
POSE_DIM = 7

REQUIRED_KEYS = (
    "format_version", "record_kind", "clip_id", "speaker_id", "source", "source_path", "fps",
    "num_frames", "motion", "audio_features", "audio", "audio_sample_rate", "gaze", "gaze_main",
    "distance", "distance_main", "emotion", "head_pose",
)


def validate_motion_record(record: Mapping[str, Any]) -> None:
  """Raises records.RecordFormatError naming the first field that breaks the format."""
  missing = [key for key in REQUIRED_KEYS if key not in record]
  if missing:
    raise records.RecordFormatError(f"motion record lacks fields {missing}")
  if record["record_kind"] != RECORD_KIND or record["format_version"] != MOTION_FORMAT_VERSION:
    raise records.RecordFormatError(
        f"clip {record['clip_id']}: record kind {record['record_kind']!r} version "
        f"{record['format_version']}, this code reads {RECORD_KIND!r} version "
        f"{MOTION_FORMAT_VERSION}")
  num_frames = record["num_frames"]
  motion = np.asarray(record["motion"])
  expected = {
      "motion": (num_frames, motion.shape[-1] if motion.ndim == 2 else -1),
      "audio_features": (num_frames, np.shape(record["audio_features"])[-1]),
      "gaze": (num_frames, 2), "gaze_main": (2,), "distance": (num_frames,),
      "distance_main": (), "head_pose": (num_frames, 3),
  }
  for key, shape in expected.items():
    if np.shape(record[key]) != shape:
      raise records.RecordFormatError(
          f"clip {record['clip_id']}: {key} has shape {np.shape(record[key])}, expected {shape}")
  if motion.shape[-1] <= POSE_DIM:
    raise records.RecordFormatError(
        f"clip {record['clip_id']}: motion width {motion.shape[-1]} leaves no z_dyn after the "
        f"{POSE_DIM} pose values")
  if np.ndim(record["emotion"]) != 1:
    raise records.RecordFormatError(
        f"clip {record['clip_id']}: emotion must be [E], got shape {np.shape(record['emotion'])}")


def encode_motion_record(record: Mapping[str, Any]) -> bytes:
  """Validates and serialises one motion record (read back with `decode_motion_record`)."""
  validate_motion_record(record)
  return serialization.msgpack_serialize(dict(record))


def decode_motion_record(data: bytes) -> dict[str, Any]:
  """Deserialises and validates one motion record."""
  record = serialization.msgpack_restore(data)
  validate_motion_record(record)
  return record
