"""The on-disk clip record: one ArrayRecord entry per video clip, shared by every writer and reader.

A record is a msgpack document (`flax.serialization`), so numpy arrays keep dtype and shape and
bytes stay bytes. Writers: `data_prep.prepare` (real video) and `data_prep.synthtalk` (synthetic
heads with ground truth). Readers: `vasa_jax.data.input_pipeline`.

Clip record, format version 1 (T frames, N audio samples):

  format_version      int     RECORD_FORMAT_VERSION
  clip_id             str     unique within a data set, e.g. "id00012/abc123XYZ/00001"
  speaker_id          str     e.g. "id00012"; splits are disjoint in speakers
  source              str     "voxceleb2" | "folder" | "synthtalk"
  source_path         str     the file the clip came from ("" for synthetic clips)
  fps                 float   frame rate of `frames` (after resampling)
  resolution          int     side of the square frames in pixels
  frames              list[bytes]  T JPEG images, [resolution, resolution, 3] RGB each
  audio               int16   [N] PCM, mono, AUDIO_SAMPLE_RATE Hz, aligned with frame 0
  audio_sample_rate   int     AUDIO_SAMPLE_RATE
  annotations         dict    per-frame tracking results (all float32 unless noted):
      landmarks         [T, 68, 2]  dlib 68-point layout, in crop pixels (x, y)
      head_pose         [T, 3]  yaw, pitch, roll in degrees (yaw > 0: the face turns to the
                                image's left, i.e. the subject's right; pitch > 0: looks up;
                                roll > 0: head tilts clockwise in the image)
      gaze              [T, 2]  theta, phi in degrees: the gaze direction in camera space
                                (head pose combined with the eyes' direction in the head);
                                theta horizontal (same sign as yaw), phi vertical (up > 0)
      distance          [T]     head-to-camera distance proxy: 1 for a face whose inter-ocular
                                distance is REFERENCE_INTEROCULAR of the source frame's short
                                side; larger is farther (proportional to 1 / face size)
      crop_box          [T, 3]  x_center, y_center, side of the square crop in source pixels
      face_found        bool [T]  False where the frame's values were interpolated
      emotion           [T, 0]  placeholder: no offline emotion model yet (emotion_available)
      emotion_available bool    False until a later stage fills `emotion`
  ground_truth        dict    SynthTalk only (absent for real video): the factors that rendered
                              each frame, see `vasa_jax.data.synthtalk.render`.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import numpy as np
from flax import serialization

RECORD_FORMAT_VERSION = 1
AUDIO_SAMPLE_RATE = 16_000
# Inter-ocular distance, as a fraction of the source frame's short side, that maps to distance 1.
REFERENCE_INTEROCULAR = 0.25
NUM_LANDMARKS = 68

REQUIRED_KEYS = (
    "format_version", "clip_id", "speaker_id", "source", "source_path", "fps", "resolution",
    "frames", "audio", "audio_sample_rate", "annotations",
)
ANNOTATION_KEYS = (
    "landmarks", "head_pose", "gaze", "distance", "crop_box", "face_found", "emotion",
    "emotion_available",
)


class RecordFormatError(ValueError):
  """A record does not follow the clip record format."""


def validate_record(record: Mapping[str, Any]) -> None:
  """Raises RecordFormatError naming the first field that breaks the format."""
  missing = [key for key in REQUIRED_KEYS if key not in record]
  if missing:
    raise RecordFormatError(f"clip record lacks fields {missing}")
  if record["format_version"] != RECORD_FORMAT_VERSION:
    raise RecordFormatError(
        f"clip record has format_version {record['format_version']}, this code reads "
        f"{RECORD_FORMAT_VERSION}")
  num_frames = len(record["frames"])
  annotations = record["annotations"]
  missing = [key for key in ANNOTATION_KEYS if key not in annotations]
  if missing:
    raise RecordFormatError(f"clip {record['clip_id']}: annotations lack {missing}")
  expected_shapes = {
      "landmarks": (num_frames, NUM_LANDMARKS, 2),
      "head_pose": (num_frames, 3),
      "gaze": (num_frames, 2),
      "distance": (num_frames,),
      "crop_box": (num_frames, 3),
      "face_found": (num_frames,),
  }
  for key, shape in expected_shapes.items():
    if np.shape(annotations[key]) != shape:
      raise RecordFormatError(
          f"clip {record['clip_id']}: annotations[{key!r}] has shape "
          f"{np.shape(annotations[key])}, expected {shape}")
  audio = record["audio"]
  if audio.dtype != np.int16 or audio.ndim != 1:
    raise RecordFormatError(
        f"clip {record['clip_id']}: audio must be 1-D int16, got {audio.dtype} {audio.shape}")


def encode_record(record: Mapping[str, Any]) -> bytes:
  """Validates and serialises one clip record."""
  validate_record(record)
  return serialization.msgpack_serialize(dict(record))


def decode_record(data: bytes) -> dict[str, Any]:
  """Deserialises one clip record (numpy arrays come back with their dtypes)."""
  record = serialization.msgpack_restore(data)
  if record.get("format_version") != RECORD_FORMAT_VERSION:
    raise RecordFormatError(
        f"record has format_version {record.get('format_version')}, this code reads "
        f"{RECORD_FORMAT_VERSION}")
  return record


def shard_name(split: str, index: int, num_shards: int) -> str:
  """`<split>-00000-of-00008.array_record`."""
  return f"{split}-{index:05d}-of-{num_shards:05d}.array_record"


def write_shard(path: str, encoded_records: Iterable[bytes]) -> int:
  """Writes an ArrayRecord shard atomically (a finished shard is complete or absent).

  Returns the number of records written.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  tmp_path = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp_path, "group_size:1")
  count = 0
  try:
    for data in encoded_records:
      writer.write(data)
      count += 1
  except BaseException:
    writer.close()
    os.remove(tmp_path)
    raise
  writer.close()
  os.replace(tmp_path, path)
  return count


def read_shard(path: str) -> list[dict[str, Any]]:
  """Reads every record of one shard (for tools and tests; training reads through Grain)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  reader = array_record_module.ArrayRecordReader(path)
  try:
    return [decode_record(data) for data in reader.read_all()]
  finally:
    reader.close()


# ----------------------------------------------------------------------------------------------
# manifest.json: what a prepared data directory holds.
#
#   format_version     int    RECORD_FORMAT_VERSION
#   source             str    "voxceleb2" | "folder" | "synthtalk"
#   resolution, fps, audio_sample_rate
#   splits             {split: {"shards": [file names in read order],
#                               "clips": [{"clip_id", "speaker_id", "num_frames"}, ...]}}
#                      `clips` lists every record in the order Grain's ArrayRecordDataSource reads
#                      the split's shards (shard by shard, record by record).
#   num_inputs         int    videos or clips considered
#   skipped            {reason: count}  (every reason, zero counts included)
#   skipped_examples   {reason: [up to 20 source paths]}
#   settings           dict   the preparation flags that produced the directory
# ----------------------------------------------------------------------------------------------
MANIFEST_NAME = "manifest.json"


def write_manifest(output_dir: str, manifest: Mapping[str, Any]) -> str:
  """Writes manifest.json atomically and returns its path."""
  import json  # pylint: disable=g-import-not-at-top

  path = os.path.join(output_dir, MANIFEST_NAME)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(dict(manifest, format_version=RECORD_FORMAT_VERSION), f, indent=1)
  os.replace(path + ".tmp", path)
  return path


def read_manifest(data_dir: str) -> dict[str, Any]:
  """Reads a prepared directory's manifest, with errors that say what is wrong."""
  import json  # pylint: disable=g-import-not-at-top

  path = os.path.join(data_dir, MANIFEST_NAME)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data directory {data_dir!r} does not exist")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{data_dir!r} has no {MANIFEST_NAME}: prepare it with `python -m data_prep.prepare` "
        "or `python -m data_prep.synthtalk` first")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("format_version") != RECORD_FORMAT_VERSION:
    raise RecordFormatError(
        f"{path} has format_version {manifest.get('format_version')}, this code reads "
        f"{RECORD_FORMAT_VERSION}")
  return manifest


def split_shard_paths(data_dir: str, manifest: Mapping[str, Any], split: str) -> list[str]:
  """The shard files of one split, checked to exist."""
  if split not in manifest["splits"]:
    raise KeyError(f"{data_dir!r} has no split {split!r}; it has {sorted(manifest['splits'])}")
  paths = [os.path.join(data_dir, name) for name in manifest["splits"][split]["shards"]]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(f"shards listed in the manifest are missing: {missing[:3]}")
  return paths
