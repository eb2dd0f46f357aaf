"""Grain input pipelines over prepared clip shards, and global batches for the device mesh.

Two samplers read shards in the `vasa_jax.data.records` layout:
  * stage 1 (face latent autoencoder), on clip records: from one clip two random frames `I_i`
    (source) and `I_j` (driver), plus one frame of a different speaker `I_d` (cross-identity);
    it reads the two clips' headers (annotations) and the three frames, each frame being an
    entry of its own, and nothing else of the clips;
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
from typing import Any, Callable, Iterator, Mapping, Sequence

import cv2
import grain
from absl import flags
from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from vasa_jax.data import head_geometry
from vasa_jax.data import motion_records
from vasa_jax.data import records

# The samplers run in Grain's worker processes and threads: OpenCV's own thread pool on top of
# them would only oversubscribe the cores.
cv2.setNumThreads(1)


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
  # [N] int: the entry of the split's shards (read one after the other) where each record
  # starts: a clip's header (`records.clip_entry_offsets`), a motion record's only entry.
  first_entries: np.ndarray
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
    num_frames = np.array([clip["num_frames"] for clip in clips])
    record_kind = manifest.get("record_kind", "clip")
    return cls(
        shard_paths=tuple(shard_paths),
        clip_ids=tuple(clip["clip_id"] for clip in clips),
        speaker_ids=np.array([speaker_number[clip["speaker_id"]] for clip in clips]),
        speakers=speakers,
        num_frames=num_frames,
        first_entries=(records.clip_entry_offsets(num_frames) if record_kind == "clip"
                       else np.arange(len(clips))),
        record_kind=record_kind,
    )

  @property
  def num_entries(self) -> int:
    """The entries the split's shards hold, by the manifest."""
    if self.record_kind == "clip":
      return int(sum(records.num_clip_entries(n) for n in self.num_frames))
    return len(self.clip_ids)


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
  return _decode_image(jpeg_bytes, image_size)[0]


def _decode_image(jpeg_bytes: bytes, image_size: int) -> tuple[np.ndarray, int]:
  """JPEG -> (uint8 RGB [image_size, image_size, 3], resized bicubic if needed; its stored side).

  OpenCV's libjpeg-turbo decodes to the same pixels as Pillow's, in a third of the time.
  """
  image = cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR_RGB)
  if image is None:
    raise records.RecordFormatError("a frame entry is not a JPEG image")
  stored_size = image.shape[1]
  if image.shape[:2] != (image_size, image_size):
    image = np.asarray(Image.fromarray(image).resize((image_size, image_size),
                                                     Image.Resampling.BICUBIC))
  return image, stored_size


class _RecordReader:
  """Random access to the records of a split, and to single frames of clip records (picklable
  for Grain worker processes)."""

  def __init__(self, index: ClipIndex):
    if index.record_kind not in RECORD_MAKERS:
      raise records.RecordFormatError(
          f"manifest record_kind {index.record_kind!r}; this code reads {sorted(RECORD_MAKERS)}")
    self.index = index
    self.source = grain.sources.ArrayRecordDataSource(list(index.shard_paths))
    if len(self.source) != index.num_entries:
      raise records.RecordFormatError(
          f"the shards hold {len(self.source)} entries but the manifest's "
          f"{len(index.clip_ids)} {index.record_kind} records take {index.num_entries}: the "
          "data directory is incomplete, stale, or in an older format (re-run the program "
          f"that made it: {RECORD_MAKERS[index.record_kind]})")

  def __len__(self) -> int:
    return len(self.index.clip_ids)

  def record(self, record_index: int, with_frames: bool = True) -> dict[str, Any]:
    """The whole record (a clip's without its frames unless `with_frames`)."""
    first_entry = int(self.index.first_entries[record_index])
    if self.index.record_kind == motion_records.RECORD_KIND:
      return motion_records.decode_motion_record(self.source[first_entry])
    record = records.read_clip(self.source, first_entry, with_frames)
    self._check_clip(record_index, record)
    return record

  def header(self, record_index: int) -> dict[str, Any]:
    """A clip's header: its record without frames and audio, plus `num_frames`."""
    header = records.decode_header(self.source[int(self.index.first_entries[record_index])])
    self._check_clip(record_index, header)
    return header

  def frame(self, record_index: int, frame: int) -> bytes:
    """Frame `frame` of clip `record_index`: JPEG bytes."""
    return self.source[int(self.index.first_entries[record_index]) + records.FIRST_FRAME_ENTRY
                       + int(frame)]

  def _check_clip(self, record_index: int, record: Mapping[str, Any]) -> None:
    if record["clip_id"] != self.index.clip_ids[record_index]:
      raise records.RecordFormatError(
          f"record {record_index} of the shards is clip {record['clip_id']!r}, the manifest "
          f"says {self.index.clip_ids[record_index]!r}: the data directory is stale")


def split_records(data_dir: str, split: str, record_indices: Sequence[int] | None = None,
                  with_frames: bool = True) -> Iterator[dict[str, Any]]:
  """Decoded records of a split (default: all of them, in manifest order), one at a time;
  clips without their frames unless `with_frames`."""
  reader = _RecordReader(ClipIndex.load(data_dir, split))
  for record_index in range(len(reader)) if record_indices is None else record_indices:
    yield reader.record(record_index, with_frames)


# ------------------------------------------------------------------------------------------------
# Stage 1: frame pairs plus a cross-identity frame.
# ------------------------------------------------------------------------------------------------
class Stage1Sampler:
  """Record index -> {source, driver, cross_identity} frames with their annotations.

  Reads the two clips' headers (annotations) and the three frames it uses, nothing else. The
  cross-identity frame comes from a clip of another speaker of the split, or of
  `cross_identity_reader`'s split when one is given; `speaker` and `cross_identity_speaker` are
  the speakers' numbers among their own split's (sorted) speaker ids.
  """

  def __init__(self, reader: _RecordReader, image_size: int, augmentation: Augmentation,
               cross_identity_reader: _RecordReader | None = None):
    self.reader = reader
    self.cross_identity_reader = cross_identity_reader or reader
    self.image_size = image_size
    self.augmentation = augmentation
    speakers = reader.index.speakers
    other_speakers = np.array(self.cross_identity_reader.index.speakers)[
        self.cross_identity_reader.index.speaker_ids]  # [M] speaker id of each record
    # Records of the cross-identity split whose speaker differs from each speaker of this one.
    self._others = [np.flatnonzero(other_speakers != speaker) for speaker in speakers]
    if not all(len(others) for others in self._others):
      raise ValueError(
          "stage-1 sampling needs at least two speakers (for the cross-identity frame); the "
          f"split has {speakers}" + ("" if cross_identity_reader is None else
                                     f", the cross-identity split {tuple(sorted(set(other_speakers)))}"))

  def __call__(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    index, other_index_of = self.reader.index, self.cross_identity_reader.index
    num_frames = int(index.num_frames[record_index])
    source_frame, driver_frame = rng.choice(num_frames, size=2, replace=num_frames < 2)
    other_index = rng.choice(self._others[index.speaker_ids[record_index]])
    other_frame = rng.integers(other_index_of.num_frames[other_index])

    pair_aug = _sample_augmentation(self.augmentation, rng)
    other_aug = _sample_augmentation(self.augmentation, rng)
    header = self.reader.header(record_index)
    other = self.cross_identity_reader.header(other_index)
    header_open_eye = open_eye_ratio(header["annotations"]["landmarks"])
    other_open_eye = open_eye_ratio(other["annotations"]["landmarks"])
    example = {}
    for name, reader, clip_index, clip, frame, aug, open_eye in (
        ("source", self.reader, record_index, header, source_frame, pair_aug, header_open_eye),
        ("driver", self.reader, record_index, header, driver_frame, pair_aug, header_open_eye),
        ("cross_identity", self.cross_identity_reader, other_index, other, other_frame,
         other_aug, other_open_eye)):
      image, stored_size = _decode_image(reader.frame(clip_index, frame), self.image_size)
      head_pose = clip["annotations"]["head_pose"][frame].astype(np.float32)  # [3]
      gaze = clip["annotations"]["gaze"][frame].astype(np.float32)  # [2]
      landmarks = clip["annotations"]["landmarks"][frame]  # [68, 2] crop pixels
      if name in ("source", "driver"):
        # Landmarks in the model image's pixels, then moved with the crop's zoom, shift and flip.
        points = _augment_points(landmarks * (self.image_size / stored_size), self.image_size,
                                 aug)
        if name == "driver":
          example["driver_region_mask"] = face_region_mask(points, self.image_size)
          example["driver_eye_boxes"] = eye_boxes(points)  # [2, 4] of the gaze loss
        else:
          example["source_expression_mask"] = expression_region_mask(points, self.image_size)
      head_pose, gaze = _augment_pose(head_pose, gaze, aug)
      example[f"{name}_image"] = _augment_image(image, aug)  # [S, S, 3] uint8
      example[f"{name}_head_pose"] = head_pose  # [3] yaw, pitch, roll degrees
      example[f"{name}_gaze"] = gaze  # [2] theta, phi degrees
      example[f"{name}_expression"] = expression_measures(  # [EXPRESSION_SIZE]
          landmarks, head_pose, gaze, open_eye)
    example["speaker"] = np.int32(index.speaker_ids[record_index])
    example["cross_identity_speaker"] = np.int32(other_index_of.speaker_ids[other_index])
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


def _fill_box(mask: np.ndarray, in_y: np.ndarray, in_x: np.ndarray) -> None:
  """Sets `mask` [S, S] to 1 on the rows of `in_y` x the columns of `in_x` ([S] bool, each an
  interval of pixel centres, so the box is one slice)."""
  rows, columns = np.flatnonzero(in_y), np.flatnonzero(in_x)
  if len(rows) and len(columns):
    mask[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1] = 1


def face_region_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
  """uint8 [size, size] mask, 1 over the mouth and the two eyes of `landmarks` ([68, 2] pixels).

  Each region is a box around its landmarks' centre: the mouth's half-sides are 0.6 x its
  corner-to-corner width (room for a wide-open jaw), an eye's are 0.75 x (across) and 0.5 x
  (up and down) its corner-to-corner width, so the lids and the brow edge are inside.
  """
  pixel_centres = np.arange(size) + 0.5  # the same along x and y
  mask = np.zeros((size, size), np.uint8)
  for points, half_width, half_height in (
      (landmarks[head_geometry.MOUTH_INDICES], 0.6, 0.6),
      (landmarks[head_geometry.RIGHT_EYE], 0.75, 0.5),
      (landmarks[head_geometry.LEFT_EYE], 0.75, 0.5)):
    centre = points.mean(axis=0)
    extent = np.ptp(points[:, 0]) + 1.0  # corner-to-corner width in pixels (at least 1)
    _fill_box(mask, np.abs(pixel_centres - centre[1]) <= half_height * extent,
              np.abs(pixel_centres - centre[0]) <= half_width * extent)
  return mask


# Eye box of the gaze loss: its width over the eye's corner-to-corner width, and its height over
# its width (MPIIGaze's 36 x 60 eye patches).
EYE_BOX_WIDTH = 1.5
EYE_BOX_ASPECT = 36 / 60


def eye_boxes(landmarks: np.ndarray) -> np.ndarray:
  """float32 [2, 4] boxes (y0, x0, y1, x1) in pixels around the right and the left eye of
  `landmarks` ([68, 2] pixels, x then y), for the gaze network (`vasa_jax.models.gaze`).

  Each box is centred on its eye's landmarks, EYE_BOX_WIDTH x the corner-to-corner width (+1
  pixel) wide and EYE_BOX_ASPECT x that high, the framing of MPIIGaze's eye patches.
  """
  boxes = []
  for eye in (head_geometry.RIGHT_EYE, head_geometry.LEFT_EYE):
    points = np.asarray(landmarks, np.float64)[eye]
    centre_x, centre_y = points.mean(axis=0)
    half_width = 0.5 * EYE_BOX_WIDTH * (np.ptp(points[:, 0]) + 1.0)
    half_height = EYE_BOX_ASPECT * half_width
    boxes.append((centre_y - half_height, centre_x - half_width, centre_y + half_height,
                  centre_x + half_width))
  return np.asarray(boxes, np.float32)


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
  mask = face_region_mask(landmarks, size)
  _fill_box(mask, ((pixel_centres >= landmarks[head_geometry.NOSE_BASE][1]) &
                   (pixel_centres <= jaw[:, 1].max() + margin)),
            ((pixel_centres >= jaw[:, 0].min() - margin) &
             (pixel_centres <= jaw[:, 0].max() + margin)))
  return mask


def _augment_points(points: np.ndarray, size: int, aug: dict[str, float]) -> np.ndarray:
  """Pixel coordinates [N, 2] moved as `_augment_image` moves the image's pixels."""
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


def _augment_image(image: np.ndarray, aug: dict[str, float]) -> np.ndarray:
  """Augments one frame, uint8 [S, S, 3] -> uint8 [S, S, 3]: zoom and shift of the crop, flip,
  then colour.

  The crop box of side S / scale around the shifted centre is resampled to S x S (bilinear; black
  beyond the frame), mirrored for a flip: one affine warp. Colour, on pixels p with grey
  g = mean(p) over the channels and m the image's mean: saturation s, contrast c and brightness b
  give b * ((g + (p - g) * s - m) * c + m), truncated to 0..255; it is affine in p, so one colour
  matrix.
  """
  size = image.shape[0]
  if aug["scale"] != 1.0 or aug["shift_x"] or aug["shift_y"]:
    side = size / aug["scale"]
    left = size / 2 + aug["shift_x"] * size - side / 2
    top = size / 2 + aug["shift_y"] * size - side / 2
    step = side / size  # source pixels per output pixel
    # Output pixel u (centre u + 0.5) samples the box at left + (u + 0.5) * step, i.e. OpenCV's
    # pixel-centre coordinate left + (u + 0.5) * step - 0.5; mirrored, u reads S - 1 - u.
    x_offset = left + 0.5 * step - 0.5
    row_x = ([-step, 0.0, step * (size - 1) + x_offset] if aug["flip"]
             else [step, 0.0, x_offset])
    image = cv2.warpAffine(
        image, np.array([row_x, [0.0, step, top + 0.5 * step - 0.5]]), (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
  elif aug["flip"]:
    image = cv2.flip(image, 1)
  if aug["brightness"] != 1.0 or aug["contrast"] != 1.0 or aug["saturation"] != 1.0:
    b, c, s = aug["brightness"], aug["contrast"], aug["saturation"]
    mean = sum(cv2.sumElems(image)) / image.size
    own, grey = b * c * s, b * c * (1.0 - s) / 3.0  # weights of p and of each channel in g
    offset = b * (1.0 - c) * mean - 0.5  # OpenCV rounds; -0.5 makes it truncate
    image = cv2.transform(image, np.array([[own + grey, grey, grey, offset],
                                           [grey, own + grey, grey, offset],
                                           [grey, grey, own + grey, offset]]))
  return np.ascontiguousarray(image)


def _augment_pose(head_pose: np.ndarray, gaze: np.ndarray,
                  aug: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
  """Head pose [3] and gaze [2] (degrees) of a frame augmented by `aug`: a flip mirrors yaw,
  roll and horizontal gaze."""
  if aug["flip"]:
    head_pose = head_pose * np.array([-1.0, 1.0, -1.0], np.float32)
    gaze = gaze * np.array([-1.0, 1.0], np.float32)
  return head_pose, gaze


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
    record = self.reader.record(record_index, with_frames=False)
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
  # In the training process Grain reads ahead `prefetch_batches` batches on as many threads (its
  # default, 500 batches on 16 threads, holds gigabytes of frames and keeps the threads busy
  # long after the consumer stops: a Python process waits for them before it exits).
  iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=max(1, prefetch_batches), prefetch_buffer_size=max(1, prefetch_batches)))
  if num_workers > 0:
    # Grain's worker processes read absl flags; outside an absl app (notebooks, tests) nothing
    # parsed them, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=prefetch_batches))
  return iter(iter_dataset)


def cross_identity_split(data_dir: str, split: str, fallback_split: str) -> str:
  """The split whose clips give `split`'s cross-identity frames: `split` itself when it holds two
  speakers or more, else `fallback_split` (logged; e.g. a small test split of one speaker draws
  them from the training split)."""
  speakers = ClipIndex.load(data_dir, split).speakers
  if len(speakers) > 1:
    return split
  logging.info("split %r of %s holds one speaker (%s): its stage-1 cross-identity frames come "
               "from split %r", split, data_dir, speakers[0], fallback_split)
  return fallback_split


def stage1_iterator(data_dir: str, split: str, *, batch_size: int, image_size: int, seed: int,
                    augmentation: Augmentation = Augmentation(), shuffle: bool = True,
                    num_epochs: int | None = None, process_index: int | None = None,
                    process_count: int | None = None, num_workers: int = 0,
                    prefetch_batches: int = 2,
                    cross_identity_split: str | None = None) -> grain.DatasetIterator:
  """Batches of `Stage1Sampler` examples: this process's share of `batch_size`.

  cross_identity_split: the split whose clips (of other speakers) give the cross-identity
    frames; default `split` (see `cross_identity_split` for a split of one speaker).
  """
  reader = _RecordReader(ClipIndex.load(data_dir, split))
  cross_identity_reader = (None if cross_identity_split in (None, split) else
                           _RecordReader(ClipIndex.load(data_dir, cross_identity_split)))
  sampler = Stage1Sampler(reader, image_size, augmentation, cross_identity_reader)
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

  `make_sampler(reader)` gets the split's record reader (`reader.record(i)` is decoded record i,
  `reader.frame(i, t)` the JPEG bytes of its frame t) and
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
