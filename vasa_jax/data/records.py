"""The on-disk clip record: one clip in ArrayRecord entries, shared by every writer and reader.

Writers: `data_prep.prepare` (real video) and `data_prep.synthtalk` (synthetic heads with ground
truth). Readers: `vasa_jax.data.input_pipeline` (training), `vasa_jax.data.extract_motion`, and
`read_shard` (tools and tests).

Format version 2 stores a clip as T + 2 consecutive entries of its shard, so a reader takes one
frame without reading the others (stage 1 uses three frames of clips of hundreds):

  entry 0       the clip header: a msgpack document (`flax.serialization`, numpy arrays keep
                dtype and shape) of every field below except `frames` and `audio`, plus
                `num_frames` (T)
  entry 1       the audio: int16 little-endian PCM bytes
  entry 2 + t   frame t: the JPEG bytes as they are

The clips of a shard follow each other in the manifest's order, so clip k of a split starts at
entry sum_{j<k} (T_j + 2) of its shards read one after the other (`clip_entry_offsets`).
Format 1 (one msgpack document per clip, the frames inside) is refused: re-run the program that
made the directory.

In memory (what writers give `encode_clip` and `read_shard` returns) a clip is one dict, the
clip record (T frames, N audio samples):

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
      emotion           [T, E]  per-frame expression scores of the face crop: E = 8, the softmax
                                over EMOTION_CLASSES of HSEmotion's classifier
                                (`data_prep.prepare --emotion_weights`) or SynthTalk's ground
                                truth; E = 0 where no classifier was run
      emotion_available bool    True exactly when E > 0
  ground_truth        dict    SynthTalk only (absent for real video): the factors that rendered
                              each frame, see `vasa_jax.data.synthtalk.render`.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from flax import serialization

RECORD_FORMAT_VERSION = 2
AUDIO_SAMPLE_RATE = 16_000
# Inter-ocular distance, as a fraction of the source frame's short side, that maps to distance 1.
REFERENCE_INTEROCULAR = 0.25
NUM_LANDMARKS = 68
# The expression classes of the `emotion` scores, in HSEmotion's order (its 8-class models).
EMOTION_CLASSES = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness",
                   "surprise")
# A clip's entries in its shard: the header, the audio, then one per frame.
HEADER_ENTRY = 0
AUDIO_ENTRY = 1
FIRST_FRAME_ENTRY = 2
# The programs that write clip records (named by errors about old or missing directories).
CLIP_RECORD_MAKERS = "`python -m data_prep.prepare` or `python -m data_prep.synthtalk`"

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


def _old_format_error(what: str, version: Any) -> RecordFormatError:
  return RecordFormatError(
      f"{what} is in clip record format {version}; this code reads format "
      f"{RECORD_FORMAT_VERSION} (each frame in an entry of its own, see "
      f"vasa_jax/data/records.py): re-run {CLIP_RECORD_MAKERS} to rewrite the directory")


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
  if num_frames < 1:
    raise RecordFormatError(f"clip {record['clip_id']} has no frames")
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
  emotion_width = np.shape(annotations["emotion"])[1:]
  if (np.ndim(annotations["emotion"]) != 2 or len(annotations["emotion"]) != num_frames
      or emotion_width[0] not in (0, len(EMOTION_CLASSES))):
    raise RecordFormatError(
        f"clip {record['clip_id']}: annotations['emotion'] has shape "
        f"{np.shape(annotations['emotion'])}, expected ({num_frames}, 0) or "
        f"({num_frames}, {len(EMOTION_CLASSES)})")
  if bool(annotations["emotion_available"]) != (emotion_width[0] > 0):
    raise RecordFormatError(
        f"clip {record['clip_id']}: emotion_available is {annotations['emotion_available']} "
        f"but annotations['emotion'] has {emotion_width[0]} scores per frame")
  audio = record["audio"]
  if audio.dtype != np.int16 or audio.ndim != 1:
    raise RecordFormatError(
        f"clip {record['clip_id']}: audio must be 1-D int16, got {audio.dtype} {audio.shape}")


def encode_clip(record: Mapping[str, Any]) -> list[bytes]:
  """Validates a clip record and returns its T + 2 shard entries (header, audio, frames)."""
  validate_record(record)
  header = {key: value for key, value in record.items() if key not in ("frames", "audio")}
  header["num_frames"] = len(record["frames"])
  return [serialization.msgpack_serialize(header),
          np.asarray(record["audio"], "<i2").tobytes(), *record["frames"]]


def num_clip_entries(num_frames: int) -> int:
  """How many shard entries a clip of `num_frames` frames takes."""
  return FIRST_FRAME_ENTRY + int(num_frames)


def clip_entry_offsets(num_frames: Sequence[int]) -> np.ndarray:
  """int64 [N]: the first entry of each of N consecutive clips of `num_frames` frames."""
  sizes = FIRST_FRAME_ENTRY + np.asarray(num_frames, np.int64)
  return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def decode_header(data: bytes) -> dict[str, Any]:
  """A clip's header entry -> the clip record's fields but `frames` and `audio`, plus
  `num_frames`. Raises RecordFormatError for an older format or for an entry that is no
  header (the shards and the manifest disagree)."""
  try:
    header = serialization.msgpack_restore(data)
  except Exception as error:  # msgpack raises several types for bytes that are not a document
    raise RecordFormatError(
        "a shard entry read as a clip header is not one: the shards do not match the "
        "manifest (an incomplete or stale directory?)") from error
  if not isinstance(header, dict) or "format_version" not in header:
    raise RecordFormatError(
        "a shard entry read as a clip header is not one: the shards do not match the manifest "
        "(an incomplete or stale directory?)")
  if header["format_version"] != RECORD_FORMAT_VERSION:
    raise _old_format_error("a shard record", header["format_version"])
  return header


def decode_audio(data: bytes) -> np.ndarray:
  """A clip's audio entry -> int16 [N]."""
  return np.frombuffer(data, "<i2").astype(np.int16)


def read_clip(entries: Any, first_entry: int, with_frames: bool = True) -> dict[str, Any]:
  """The clip record whose header is entry `first_entry` of `entries` (anything that maps an
  entry number to its bytes, e.g. a `grain.sources.ArrayRecordDataSource` or a list);
  without `with_frames`, the record lacks `frames` (and its frames are not read)."""
  header = decode_header(entries[first_entry])
  record = {key: value for key, value in header.items() if key != "num_frames"}
  record["audio"] = decode_audio(entries[first_entry + AUDIO_ENTRY])
  if with_frames:
    first_frame = first_entry + FIRST_FRAME_ENTRY
    record["frames"] = [entries[first_frame + t] for t in range(header["num_frames"])]
  return record


def shard_name(split: str, index: int, num_shards: int) -> str:
  """`<split>-00000-of-00008.array_record`."""
  return f"{split}-{index:05d}-of-{num_shards:05d}.array_record"


def write_shard(path: str, entries: Iterable[bytes]) -> int:
  """Writes an ArrayRecord shard atomically (a finished shard is complete or absent).

  `entries`: the shard's entries in order (`encode_clip`'s of each clip, or one motion record
  each). Returns the number of entries written.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  tmp_path = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp_path, "group_size:1")
  count = 0
  try:
    for data in entries:
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
  """Every clip record of one clip shard, frames included (for tools and tests; training reads
  single frames through `vasa_jax.data.input_pipeline`)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  reader = array_record_module.ArrayRecordReader(path)
  try:
    entries = reader.read_all()
  finally:
    reader.close()
  clips, first_entry = [], 0
  while first_entry < len(entries):
    clips.append(read_clip(entries, first_entry))
    first_entry += num_clip_entries(len(clips[-1]["frames"]))
  return clips


# ----------------------------------------------------------------------------------------------
# manifest.json: what a prepared data directory holds.
#
#   format_version     int    the format of the records: RECORD_FORMAT_VERSION for clip records
#                             (a motion directory, "record_kind": "motion", has its own:
#                             `vasa_jax.data.motion_records.MOTION_FORMAT_VERSION`)
#   source             str    "voxceleb2" | "folder" | "synthtalk"
#   resolution, fps, audio_sample_rate
#   splits             {split: {"shards": [file names in read order],
#                               "clips": [{"clip_id", "speaker_id", "num_frames"}, ...]}}
#                      `clips` lists every clip in the order its shards hold them, the shards
#                      read one after the other (`clip_entry_offsets` of the num_frames give
#                      each clip's first entry).
#   num_inputs         int    videos or clips considered
#   skipped            {reason: count}  (every reason, zero counts included)
#   skipped_examples   {reason: [up to 20 source paths]}
#   settings           dict   the preparation flags that produced the directory
# ----------------------------------------------------------------------------------------------
MANIFEST_NAME = "manifest.json"


def unfinished_shards_message(missing: Sequence[str], num_shards: int, output_dir: str,
                              made_with: str) -> str:
  """The one-line refusal of a `--merge` that finds `missing` of `num_shards` shards unfinished
  (or made with other `made_with`), naming the first ten."""
  names = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
  return (f"--merge: {len(missing)} of the {num_shards} shards are not finished (or were made "
          f"with other {made_with}) in {output_dir}: {names}; run the tasks that make them first")


def write_manifest(output_dir: str, manifest: Mapping[str, Any]) -> str:
  """Writes manifest.json atomically and returns its path; `format_version` is
  RECORD_FORMAT_VERSION unless `manifest` gives one (motion directories)."""
  import json  # pylint: disable=g-import-not-at-top

  path = os.path.join(output_dir, MANIFEST_NAME)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"format_version": RECORD_FORMAT_VERSION, **manifest}, f, indent=1)
  os.replace(path + ".tmp", path)
  return path


def read_manifest(data_dir: str) -> dict[str, Any]:
  """Reads a prepared directory's manifest, with errors that say what is wrong (a directory of
  clip records in an older format is refused here; motion records are checked one by one by
  `vasa_jax.data.motion_records`)."""
  import json  # pylint: disable=g-import-not-at-top

  path = os.path.join(data_dir, MANIFEST_NAME)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data directory {data_dir!r} does not exist")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{data_dir!r} has no {MANIFEST_NAME}: prepare it with {CLIP_RECORD_MAKERS} first")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if (manifest.get("record_kind", "clip") == "clip"
      and manifest.get("format_version") != RECORD_FORMAT_VERSION):
    raise _old_format_error(repr(data_dir), manifest.get("format_version"))
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
