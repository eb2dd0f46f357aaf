"""Grain input pipelines over prepared clip shards, and global batches for the device mesh.

Two samplers read shards in the `vasa_jax.data.records` layout:
  * stage 1 (face latent autoencoder), on clip records: from one clip two random frames `I_i`
    (source) and `I_j` (driver), plus one frame of a different speaker `I_d` (cross-identity);
  * stage 2 (motion diffusion), on clip records or on the motion records of
    `vasa_jax.data.motion_records` (manifest "record_kind": "motion"): windows of `W` frames of chosen
    per-frame arrays with the `K` preceding frames, clip-level values, and the matching raw audio.

Both build the same Grain graph: record indices -> this process's share -> seeded shuffle (a new
permutation every epoch) -> repeat -> per-example random sampling and decoding -> batch ->
iterator (optionally multiprocess). The iterator is a `grain.DatasetIterator`, so its state is
checkpointed with the model (`vasa_jax.training.checkpoint`). Batches hold numpy arrays of this
process's share of the global batch; `make_global_batch` turns them into sharded `jax.Array`s.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
from absl import flags
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from vasa_jax.data import head_geometry
from vasa_jax.data import motion_records
from vasa_jax.data import records


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Photometric and geometric augmentation of stage-1 frames (config: `data.augment`)."""
  flip_prob: float = 0.0  # probability of a horizontal flip (source and driver flip together)
  brightness: float = 0.0  # max relative brightness change, e.g. 0.1 = +-10%
  contrast: float = 0.0  # max relative contrast change
  saturation: float = 0.0  # max relative saturation change
  scale: float = 0.0  # max zoom in/out of the crop, e.g. 0.05 = +-5% of its side
  shift: float = 0.0  # max shift of the crop centre, as a fraction of its side

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> "Augmentation":
    return cls(**dict(config or {}))


@dataclasses.dataclass(frozen=True)
class ClipIndex:
  """What the manifest says about each record of a split, in the order Grain reads them."""
  shard_paths: tuple[str, ...]
  clip_ids: tuple[str, ...]
  speaker_ids: np.ndarray  # [N] int, speaker of each record (index into `speakers`)
  speakers: tuple[str, ...]
  num_frames: np.ndarray  # [N] int
  # "clip" (`vasa_jax.data.records`) or "motion" (`vasa_jax.data.motion_records`): the manifest's
  # "record_kind", which says how records are decoded.
  record_kind: str = "clip"

  @classmethod
  def load(cls, data_dir: str, split: str) -> "ClipIndex":
    manifest = records.read_manifest(data_dir)
    shard_paths = records.split_shard_paths(data_dir, manifest, split)
    clips = manifest["splits"][split]["clips"]
    if not clips:
      raise ValueError(f"split {split!r} of {data_dir!r} holds no clips")
    speakers = tuple(sorted({clip["speaker_id"] for clip in clips}))
    speaker_number = {speaker: i for i, speaker in enumerate(speakers)}
    return cls(
        shard_paths=tuple(shard_paths),
        clip_ids=tuple(clip["clip_id"] for clip in clips),
        speaker_ids=np.array([speaker_number[clip["speaker_id"]] for clip in clips]),
        speakers=speakers,
        num_frames=np.array([clip["num_frames"] for clip in clips]),
        record_kind=manifest.get("record_kind", "clip"),
    )


# The programs that make each manifest "record_kind".
RECORD_MAKERS = {"clip": "`python -m data_prep.prepare` or `python -m data_prep.synthtalk`",
                 motion_records.RECORD_KIND: "`python -m data_prep.extract_motion`"}


def check_data_dir(data_dir: str, record_kind: str, stage: str) -> None:
  """Raises ValueError / FileNotFoundError naming the problem when `data_dir` (config.data_dir
  of a `stage` run) is unset, missing, unprepared or holds records of another kind."""
  if not data_dir:
    raise ValueError(f"config.data_dir is not set: pass --config.data_dir=DIR, a directory of "
                     f"{record_kind} records made by {RECORD_MAKERS[record_kind]}")
  found = records.read_manifest(data_dir).get("record_kind", "clip")
  if found != record_kind:
    maker = RECORD_MAKERS.get(found, "an unknown program")
    raise ValueError(f"{data_dir!r} holds {found} records (made by {maker}), but stage {stage!r} "
                     f"trains on {record_kind} records (made by {RECORD_MAKERS[record_kind]})")


def decode_frame(jpeg_bytes: bytes, image_size: int) -> np.ndarray:
  """JPEG -> uint8 [image_size, image_size, 3], resized (bicubic) if stored at another size."""
  image = Image.open(io.BytesIO(jpeg_bytes)).convert("RGB")
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
  return np.asarray(image)


# Decoder of each manifest "record_kind".
RECORD_DECODERS = {"clip": records.decode_record,
                   motion_records.RECORD_KIND: motion_records.decode_motion_record}


class _RecordReader:
  """Random access to decoded records of a split (picklable for Grain worker processes)."""

  def __init__(self, index: ClipIndex):
    if index.record_kind not in RECORD_DECODERS:
      raise records.RecordFormatError(
          f"manifest record_kind {index.record_kind!r}; this code reads {sorted(RECORD_DECODERS)}")
    self.index = index
    self.decode = RECORD_DECODERS[index.record_kind]
    self.source = grain.sources.ArrayRecordDataSource(list(index.shard_paths))
    if len(self.source) != len(index.clip_ids):
      raise records.RecordFormatError(
          f"the shards hold {len(self.source)} records but the manifest lists "
          f"{len(index.clip_ids)}: the data directory is incomplete or stale")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, record_index: int) -> dict[str, Any]:
    return self.decode(self.source[int(record_index)])


def split_records(data_dir: str, split: str, record_indices: Sequence[int] | None = None
                  ) -> Iterator[dict[str, Any]]:
  """Decoded records of a split (default: all of them, in manifest order), one at a time."""
  reader = _RecordReader(ClipIndex.load(data_dir, split))
  for record_index in range(len(reader)) if record_indices is None else record_indices:
    yield reader[record_index]


# ------------------------------------------------------------------------------------------------
# Stage 1: frame pairs plus a cross-identity frame.
# ------------------------------------------------------------------------------------------------
class Stage1Sampler:
  """Record index -> {source, driver, cross_identity} frames with their annotations."""

  def __init__(self, reader: _RecordReader, image_size: int, augmentation: Augmentation):
    self.reader = reader
    self.image_size = image_size
    self.augmentation = augmentation
    speaker_ids = reader.index.speaker_ids
    if len(np.unique(speaker_ids)) < 2:
      raise ValueError(
          "stage-1 sampling needs at least two speakers in the split (for the cross-identity "
          f"frame); it has {reader.index.speakers}")
    # Records of each speaker's complement, for drawing a different speaker.
    self._others = [np.flatnonzero(speaker_ids != s) for s in range(speaker_ids.max() + 1)]

  def __call__(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    record = self.reader[record_index]
    num_frames = len(record["frames"])
    source_frame, driver_frame = rng.choice(num_frames, size=2, replace=num_frames < 2)
    other_index = rng.choice(self._others[self.reader.index.speaker_ids[record_index]])
    other = self.reader[other_index]
    other_frame = rng.integers(len(other["frames"]))

    pair_aug = _sample_augmentation(self.augmentation, rng)
    other_aug = _sample_augmentation(self.augmentation, rng)
    record_open_eye = open_eye_ratio(record["annotations"]["landmarks"])
    other_open_eye = open_eye_ratio(other["annotations"]["landmarks"])
    example = {}
    for name, rec, frame, aug, open_eye in (
        ("source", record, source_frame, pair_aug, record_open_eye),
        ("driver", record, driver_frame, pair_aug, record_open_eye),
        ("cross_identity", other, other_frame, other_aug, other_open_eye)):
      image = decode_frame(rec["frames"][frame], self.image_size)
      head_pose = rec["annotations"]["head_pose"][frame].astype(np.float32)  # [3]
      gaze = rec["annotations"]["gaze"][frame].astype(np.float32)  # [2]
      landmarks = rec["annotations"]["landmarks"][frame]  # [68, 2] crop pixels
      if name in ("source", "driver"):
        # Landmarks in the model image's pixels, then moved with the crop's zoom, shift and flip.
        stored_size = Image.open(io.BytesIO(rec["frames"][frame])).size[0]
        points = _augment_points(landmarks * (self.image_size / stored_size), self.image_size,
                                 aug)
        if name == "driver":
          example["driver_region_mask"] = face_region_mask(points, self.image_size)
        else:
          example["source_expression_mask"] = expression_region_mask(points, self.image_size)
      image, head_pose, gaze = _apply_augmentation(image, head_pose, gaze, aug)
      example[f"{name}_image"] = image  # [S, S, 3] uint8
      example[f"{name}_head_pose"] = head_pose  # [3] yaw, pitch, roll degrees
      example[f"{name}_gaze"] = gaze  # [2] theta, phi degrees
      example[f"{name}_expression"] = expression_measures(  # [EXPRESSION_SIZE]
          landmarks, head_pose, gaze, open_eye)
    example["speaker"] = np.int32(self.reader.index.speaker_ids[record_index])
    example["cross_identity_speaker"] = np.int32(self.reader.index.speaker_ids[other_index])
    return example


# Entries of `expression_measures`, in order.
EXPRESSION_NAMES = ("mouth_opening", "eye_opening", "gaze_theta_in_head", "gaze_phi_in_head")
EXPRESSION_SIZE = len(EXPRESSION_NAMES)


def open_eye_ratio(clip_landmarks: np.ndarray) -> float:
  """The eye aspect ratio of a clip's open eyes: its median over the frames ([T, 68, 2]
  landmarks); blinks are brief, so the median frame has its eyes open."""
  return float(np.median(head_geometry.eye_aspect_ratio(clip_landmarks)))


def expression_measures(landmarks: np.ndarray, head_pose: np.ndarray, gaze: np.ndarray,
                        clip_open_eye_ratio: float) -> np.ndarray:
  """A frame's facial dynamics measured from its annotations -> float32 [EXPRESSION_SIZE].

  (mouth opening / mouth width; eye opening: the mean eye aspect ratio of both eyes over the
  clip's open-eye one, `open_eye_ratio`, so ~1 with the eyes open and ~0.3 closed whatever the
  eyes' shape; gaze theta and phi relative to the head in radians: the camera-space gaze minus
  the head's yaw and pitch). The raw eye aspect ratio differs between faces (on SynthTalk a
  per-speaker offset of a third of its standard deviation), so a z_dyn carrying it would give a
  cross-speaker swap the driver's eye shape; over the clip's own open eye that offset falls to
  2% of it. The ratios come from the tracker's landmarks and do not change under the crop's
  zoom, shift or flip; the flip is applied to `head_pose` and `gaze` ([3] and [2] degrees)
  before they come here.
  """
  gaze_in_head = np.deg2rad(gaze - head_pose[:2])
  eye_opening = head_geometry.eye_aspect_ratio(landmarks) / max(clip_open_eye_ratio, 1e-6)
  return np.array([head_geometry.mouth_aspect_ratio(landmarks), eye_opening, *gaze_in_head],
                  np.float32)


def face_region_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
  """uint8 [size, size] mask, 1 over the mouth and the two eyes of `landmarks` ([68, 2] pixels).

  Each region is a box around its landmarks' centre: the mouth's half-sides are 0.6 x its
  corner-to-corner width (room for a wide-open jaw), an eye's are 0.75 x (across) and 0.5 x
  (up and down) its corner-to-corner width, so the lids and the brow edge are inside.
  """
  pixel_centres = np.arange(size) + 0.5  # the same along x and y
  inside = np.zeros((size, size), bool)
  for points, half_width, half_height in (
      (landmarks[head_geometry.MOUTH_INDICES], 0.6, 0.6),
      (landmarks[head_geometry.RIGHT_EYE], 0.75, 0.5),
      (landmarks[head_geometry.LEFT_EYE], 0.75, 0.5)):
    centre = points.mean(axis=0)
    extent = np.ptp(points[:, 0]) + 1.0  # corner-to-corner width in pixels (at least 1)
    in_x = np.abs(pixel_centres - centre[0]) <= half_width * extent  # [S]
    in_y = np.abs(pixel_centres - centre[1]) <= half_height * extent  # [S]
    inside |= in_y[:, None] & in_x[None, :]
  return inside.astype(np.uint8)


def expression_region_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
  """uint8 [size, size] mask, 1 where facial dynamics can change a frame of `landmarks`.

  The eyes' boxes of `face_region_mask` (lids, gaze) and the lower face: from the nose base
  (landmark 33) to below the chin, across the jaw (landmarks 0-16), both extended by 0.15 x the
  jaw's width, the room a dropping jaw and moving cheeks take. The complement is what a change of
  expression alone leaves as it is (background, hair, forehead, the upper nose).
  """
  pixel_centres = np.arange(size) + 0.5
  jaw = np.asarray(landmarks, np.float64)[head_geometry.JAW]
  margin = 0.15 * (np.ptp(jaw[:, 0]) + 1.0)
  in_x = (pixel_centres >= jaw[:, 0].min() - margin) & (pixel_centres <= jaw[:, 0].max() + margin)
  in_y = ((pixel_centres >= landmarks[head_geometry.NOSE_BASE][1]) &
          (pixel_centres <= jaw[:, 1].max() + margin))
  lower_face = in_y[:, None] & in_x[None, :]
  return (lower_face | face_region_mask(landmarks, size).astype(bool)).astype(np.uint8)


def _augment_points(points: np.ndarray, size: int, aug: dict[str, float]) -> np.ndarray:
  """Pixel coordinates [N, 2] moved as `_apply_augmentation` moves the image's pixels."""
  points = np.asarray(points, np.float64)
  if aug["scale"] != 1.0 or aug["shift_x"] or aug["shift_y"]:
    centre = np.array([size / 2 + aug["shift_x"] * size, size / 2 + aug["shift_y"] * size])
    points = (points - centre) * aug["scale"] + size / 2  # the crop box of side size / scale
  if aug["flip"]:
    points = np.stack([size - points[:, 0], points[:, 1]], axis=-1)
  return points


def _sample_augmentation(aug: Augmentation, rng: np.random.Generator) -> dict[str, float]:
  return {
      "flip": bool(rng.random() < aug.flip_prob),
      "brightness": 1.0 + rng.uniform(-aug.brightness, aug.brightness),
      "contrast": 1.0 + rng.uniform(-aug.contrast, aug.contrast),
      "saturation": 1.0 + rng.uniform(-aug.saturation, aug.saturation),
      "scale": 1.0 + rng.uniform(-aug.scale, aug.scale),
      "shift_x": rng.uniform(-aug.shift, aug.shift),
      "shift_y": rng.uniform(-aug.shift, aug.shift),
  }


def _apply_augmentation(image: np.ndarray, head_pose: np.ndarray, gaze: np.ndarray,
                        aug: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Augments one frame; a flip mirrors yaw, roll and horizontal gaze with it."""
  size = image.shape[0]
  if aug["scale"] != 1.0 or aug["shift_x"] or aug["shift_y"]:
    side = size / aug["scale"]
    centre_x = size / 2 + aug["shift_x"] * size
    centre_y = size / 2 + aug["shift_y"] * size
    box = (centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)
    image = np.asarray(Image.fromarray(image).transform(
        (size, size), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR))
  if aug["flip"]:
    image = image[:, ::-1]
    head_pose = head_pose * np.array([-1.0, 1.0, -1.0], np.float32)
    gaze = gaze * np.array([-1.0, 1.0], np.float32)
  if aug["brightness"] != 1.0 or aug["contrast"] != 1.0 or aug["saturation"] != 1.0:
    pixels = image.astype(np.float32)
    grey = pixels.mean(axis=-1, keepdims=True)
    pixels = grey + (pixels - grey) * aug["saturation"]
    pixels = (pixels - pixels.mean()) * aug["contrast"] + pixels.mean()
    image = np.clip(pixels * aug["brightness"], 0, 255).astype(np.uint8)
  return np.ascontiguousarray(image), head_pose, gaze


# ------------------------------------------------------------------------------------------------
# Stage 2: windows of per-frame arrays with the preceding frames.
# ------------------------------------------------------------------------------------------------
def _lookup(record: Mapping[str, Any], path: str) -> np.ndarray:
  """`"annotations/head_pose"` -> record["annotations"]["head_pose"]."""
  value = record
  for part in path.split("/"):
    if part not in value:
      raise KeyError(f"clip {record['clip_id']} has no field {path!r} (missing {part!r})")
    value = value[part]
  return np.asarray(value)


class Stage2Sampler:
  """Record index -> a window of `window` frames and the `num_previous` frames before it.

  Output, for each name in `frame_fields` (a "/" path into the record, e.g. "motion" or
  "annotations/head_pose"; the output key is the last part), as float32:
    <key>           [W, ...]  frames [s, s + W)
    <key>_previous  [K, ...]  frames [s - K, s); frames before the clip start repeat frame 0
  for each name in `clip_fields` (a path to a clip-level value, e.g. "gaze_main" or "emotion"):
    <key>           the whole value as float32 (e.g. [2], [], [E])
  plus
    audio           [W * samples_per_frame] float32 in [-1, 1] (when `with_audio`)
    audio_previous  [K * samples_per_frame] float32 (zeros before the clip start)
    previous_mask   [K] bool: True where the previous frame is real
    window_start    int32 s

  The clip's frame count comes from the manifest (`ClipIndex.num_frames`): motion records hold
  no frames.
  """

  def __init__(self, reader: _RecordReader, window: int, num_previous: int,
               frame_fields: Sequence[str], with_audio: bool, clip_fields: Sequence[str] = ()):
    self.reader = reader
    self.window = window
    self.num_previous = num_previous
    self.frame_fields = tuple(frame_fields)
    self.clip_fields = tuple(clip_fields)
    self.with_audio = with_audio

  def __call__(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    record = self.reader[record_index]
    num_frames = int(self.reader.index.num_frames[record_index])
    start = int(rng.integers(0, num_frames - self.window + 1))
    previous = np.arange(start - self.num_previous, start)
    example = {
        "previous_mask": previous >= 0,
        "window_start": np.int32(start),
    }
    for path in self.frame_fields:
      values = _lookup(record, path)
      key = path.split("/")[-1]
      example[key] = values[start:start + self.window].astype(np.float32)
      example[f"{key}_previous"] = values[np.maximum(previous, 0)].astype(np.float32)
    for path in self.clip_fields:
      example[path.split("/")[-1]] = _lookup(record, path).astype(np.float32)
    if self.with_audio:
      samples_per_frame = _samples_per_frame(record)
      audio = record["audio"].astype(np.float32) / 32768.0
      padded = np.concatenate([
          np.zeros(self.num_previous * samples_per_frame, np.float32), audio,
          np.zeros((self.window + self.num_previous) * samples_per_frame, np.float32)])
      begin = start * samples_per_frame  # in `padded`, this is frame start - K
      split = begin + self.num_previous * samples_per_frame
      example["audio_previous"] = padded[begin:split]
      example["audio"] = padded[split:split + self.window * samples_per_frame]
    return example


def _samples_per_frame(record: Mapping[str, Any]) -> int:
  samples = record["audio_sample_rate"] / record["fps"]
  if abs(samples - round(samples)) > 1e-6:
    raise ValueError(
        f"clip {record['clip_id']}: {record['audio_sample_rate']} Hz audio at {record['fps']} "
        "fps is not a whole number of samples per frame")
  return int(round(samples))


# ------------------------------------------------------------------------------------------------
# The Grain graph.
# ------------------------------------------------------------------------------------------------
def _build_iterator(eligible: np.ndarray, sample_fn: Callable[[int, np.random.Generator], Any],
                    *, batch_size: int, seed: int, shuffle: bool, num_epochs: int | None,
                    process_index: int, process_count: int, num_workers: int,
                    prefetch_batches: int) -> grain.DatasetIterator:
  if batch_size % process_count:
    raise ValueError(f"global batch size {batch_size} is not divisible by {process_count} "
                     "processes")
  local_batch_size = batch_size // process_count
  process_records = eligible[process_index::process_count]
  if len(process_records) == 0:
    raise ValueError(f"process {process_index} of {process_count} gets no records")
  dataset = grain.MapDataset.source(process_records.tolist())
  if shuffle:
    dataset = dataset.shuffle(seed=seed)
  dataset = dataset.repeat(num_epochs)
  # Each process draws its own random frames: the seed differs per process.
  dataset = dataset.random_map(sample_fn, seed=seed * 1_000_003 + process_index)
  dataset = dataset.batch(local_batch_size, drop_remainder=True)
  iter_dataset = dataset.to_iter_dataset()
  if num_workers > 0:
    # Grain's worker processes read absl flags; outside an absl app (notebooks, tests) nothing
    # parsed them, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=prefetch_batches))
  return iter(iter_dataset)


def stage1_iterator(data_dir: str, split: str, *, batch_size: int, image_size: int, seed: int,
                    augmentation: Augmentation = Augmentation(), shuffle: bool = True,
                    num_epochs: int | None = None, process_index: int | None = None,
                    process_count: int | None = None, num_workers: int = 0,
                    prefetch_batches: int = 2) -> grain.DatasetIterator:
  """Batches of `Stage1Sampler` examples: this process's share of `batch_size`."""
  reader = _RecordReader(ClipIndex.load(data_dir, split))
  sampler = Stage1Sampler(reader, image_size, augmentation)
  return _build_iterator(
      np.arange(len(reader.index.clip_ids)), sampler, batch_size=batch_size, seed=seed,
      shuffle=shuffle, num_epochs=num_epochs,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      num_workers=num_workers, prefetch_batches=prefetch_batches)


def stage2_iterator(data_dir: str, split: str, *, batch_size: int, window: int,
                    num_previous: int, frame_fields: Sequence[str], with_audio: bool, seed: int,
                    clip_fields: Sequence[str] = (), shuffle: bool = True,
                    num_epochs: int | None = None, process_index: int | None = None,
                    process_count: int | None = None, num_workers: int = 0,
                    prefetch_batches: int = 2) -> grain.DatasetIterator:
  """Batches of `Stage2Sampler` windows; clips shorter than `window` frames are left out."""
  index = ClipIndex.load(data_dir, split)
  eligible = np.flatnonzero(index.num_frames >= window)
  if len(eligible) == 0:
    raise ValueError(f"no clip of split {split!r} in {data_dir!r} has {window} frames "
                     f"(longest: {index.num_frames.max()})")
  sampler = Stage2Sampler(_RecordReader(index), window, num_previous, frame_fields, with_audio,
                          clip_fields)
  return _build_iterator(
      eligible, sampler, batch_size=batch_size, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      num_workers=num_workers, prefetch_batches=prefetch_batches)


def sampler_iterator(data_dir: str, split: str,
                     make_sampler: Callable[[Any], Callable[[int, np.random.Generator], Any]], *,
                     min_frames: int, batch_size: int, seed: int, shuffle: bool = True,
                     num_epochs: int | None = None, process_index: int | None = None,
                     process_count: int | None = None, num_workers: int = 0,
                     prefetch_batches: int = 2) -> grain.DatasetIterator:
  """The same Grain graph over another stage's sampler (e.g. `vasa_jax.trainers.syncnet`'s).

  `make_sampler(reader)` gets the split's record reader (`reader[i]` is decoded record i) and
  returns the per-example function (record index, rng) -> example; clips shorter than
  `min_frames` are left out.
  """
  index = ClipIndex.load(data_dir, split)
  eligible = np.flatnonzero(index.num_frames >= min_frames)
  if len(eligible) == 0:
    raise ValueError(f"no clip of split {split!r} in {data_dir!r} has {min_frames} frames")
  return _build_iterator(
      eligible, make_sampler(_RecordReader(index)), batch_size=batch_size, seed=seed,
      shuffle=shuffle, num_epochs=num_epochs,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      num_workers=num_workers, prefetch_batches=prefetch_batches)


def make_global_batch(local_batch: Any, sharding: NamedSharding) -> Any:
  """This process's numpy batch -> global `jax.Array`s, batch dimension sharded by `sharding`."""
  return jax.tree.map(
      lambda array: jax.make_array_from_process_local_data(sharding, np.asarray(array)),
      local_batch)


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> NamedSharding:
  """The sharding of a batch's leading dimension: the mesh axes the "batch" rule names."""
  mesh_axes = dict(rules).get("batch")
  return NamedSharding(mesh, PartitionSpec(mesh_axes))
