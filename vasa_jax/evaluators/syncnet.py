"""SyncNet confidence Sc and distance SD (LSE-C / LSE-D) and the AV offset, as syncnet_python.

Scoring follows `SyncNetInstance.evaluate` of joonson/syncnet_python:
  * video at 25 fps, audio at 16 kHz as int16 samples, MFCCs of the whole clip (`mfcc.mfcc`);
  * L = min(frames, floor(samples / 640)); windows t = 0 .. L - 6: the lip window is frames
    t .. t + 4 (BGR, 0-255, 224 x 224) and the audio window MFCC steps 4t .. 4t + 19;
  * both embedded by SyncNet (`vasa_jax.models.syncnet`); the audio embeddings are zero-padded by
    vshift = 15 windows at both ends and, for each offset k = 0 .. 30, the Euclidean distance
    ||lip_t - audio_{t + k - 15} + 1e-6|| (torch's `pairwise_distance`) is averaged over t;
  * SD = the minimum of those mean distances, Sc = their median minus SD, offset = 15 - argmin
    (positive: the sound comes that many frames earlier than the lips that go with it).
Without a ready face crop, `crop_faces` cuts one the way syncnet_python's `run_pipeline.py` does
(box centre and size median-filtered over 13 frames, the crop reaching crop_scale = 0.4 box sizes
around the face and further below it, padding value 110, resized to 224), but from the box around
this project's 68 tracked landmarks (`FaceTracker.track_landmarks`) instead of S3FD's detections.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import numpy as np
from scipy import signal as scipy_signal

from vasa_jax.data import face_tracker
from vasa_jax.evaluators import batching
from vasa_jax.evaluators import mfcc as mfcc_lib
from vasa_jax.models import syncnet as syncnet_lib

FPS = 25
SAMPLES_PER_FRAME = mfcc_lib.SAMPLE_RATE // FPS  # 640
MFCC_STEPS_PER_FRAME = SAMPLES_PER_FRAME // mfcc_lib.STEP_SAMPLES  # 4
VSHIFT = 15
# Windows embedded per call (syncnet_python's default batch size; the last batch is padded).
BATCH_SIZE = 20
# torch.nn.functional.pairwise_distance's eps, added to the difference before the norm.
PAIRWISE_EPS = 1e-6
# run_pipeline.py's crop: margin in box sizes, median filter length, padding grey level.
CROP_SCALE = 0.4
SMOOTHING_FRAMES = 13
PAD_VALUE = 110
# Fewest frames a clip needs: one 5-frame window plus the one frame the window count drops.
MIN_FRAMES = syncnet_lib.LIP_FRAMES + 1


@dataclasses.dataclass(frozen=True)
class SyncScores:
  """confidence (Sc), distance (SD), offset (frames), mean_distances [2 vshift + 1] per offset
  k = 0 .. 2 vshift (audio shifted by k - vshift windows), num_windows."""
  confidence: float
  distance: float
  offset: int
  mean_distances: np.ndarray
  num_windows: int


def num_windows(num_frames: int, num_samples: int) -> int:
  """Windows `SyncNetInstance.evaluate` scores: min(frames, samples // 640) - 5 (may be <= 0)."""
  return min(num_frames, num_samples // SAMPLES_PER_FRAME) - syncnet_lib.LIP_FRAMES


def offset_scores(lip_embeddings: np.ndarray, audio_embeddings: np.ndarray,
                  vshift: int = VSHIFT) -> SyncScores:
  """Sc, SD and offset from per-window embeddings [N, D] (`calc_pdist` and `evaluate`)."""
  lips = np.asarray(lip_embeddings, np.float64)
  audio = np.asarray(audio_embeddings, np.float64)
  if lips.shape != audio.shape or lips.ndim != 2 or not len(lips):
    raise ValueError(f"need matching non-empty [N, D] embeddings, got {lips.shape} and "
                     f"{audio.shape}")
  count, width = len(lips), 2 * vshift + 1
  padded = np.concatenate([np.zeros((vshift, audio.shape[1])), audio,
                           np.zeros((vshift, audio.shape[1]))])
  windows = padded[np.arange(count)[:, None] + np.arange(width)[None, :]]  # [N, width, D]
  distances = np.linalg.norm(lips[:, None, :] - windows + PAIRWISE_EPS, axis=-1)  # [N, width]
  mean_distances = distances.mean(axis=0)  # [width]
  best = int(np.argmin(mean_distances))  # the first minimum, as torch.min
  # torch.median of an even count is the lower middle value (width is odd here anyway).
  median = np.sort(mean_distances)[(width - 1) // 2]
  return SyncScores(confidence=float(median - mean_distances[best]),
                    distance=float(mean_distances[best]), offset=vshift - best,
                    mean_distances=mean_distances, num_windows=count)


def bgr_float(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB [..., 3] -> float32 BGR 0-255, what the reference's cv2 frames become."""
  return np.asarray(frames)[..., ::-1].astype(np.float32)


class SyncNetScorer:
  """Embeds clips with one SyncNet (jit-compiled once per batch shape) and scores them."""

  def __init__(self, variables: Any, model: syncnet_lib.SyncNet = syncnet_lib.SyncNet(),
               batch_size: int = BATCH_SIZE, vshift: int = VSHIFT):
    self.variables = jax.device_put(nn.unbox(variables))
    self.model = model
    self.batch_size = batch_size
    self.vshift = vshift
    self._embed_lips = jax.jit(lambda v, x: model.apply(v, x, method=model.embed_lips))
    self._embed_audio = jax.jit(lambda v, x: model.apply(v, x, method=model.embed_audio))

  def lip_embeddings(self, crops: np.ndarray, count: int) -> np.ndarray:
    """[count, D] embeddings of the 5-frame windows starting at frames 0 .. count - 1 of
    uint8 RGB 224 px face crops [T, 224, 224, 3] at 25 fps."""
    crops = np.asarray(crops)
    size = syncnet_lib.LIP_SIZE
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
      raise ValueError(f"crops must be uint8 [T, {size}, {size}, 3], got {crops.dtype} "
                       f"{crops.shape}")
    frames = bgr_float(crops[:count + syncnet_lib.LIP_FRAMES - 1])
    windows = np.stack([frames[t:t + syncnet_lib.LIP_FRAMES] for t in range(count)])
    return batching.batched(functools.partial(self._embed_lips, self.variables), windows,
                            self.batch_size)

  def audio_embeddings(self, audio: np.ndarray, count: int) -> np.ndarray:
    """[count, D] embeddings of the MFCC windows of frames 0 .. count - 1 of int16 16 kHz audio
    (MFCCs of the whole clip, steps 4t .. 4t + 19)."""
    coefficients = mfcc_lib.mfcc(np.asarray(audio)).T.astype(np.float32)  # [13, steps]
    steps = syncnet_lib.MFCC_STEPS
    windows = np.stack([coefficients[:, MFCC_STEPS_PER_FRAME * t:
                                     MFCC_STEPS_PER_FRAME * t + steps] for t in range(count)])
    return batching.batched(functools.partial(self._embed_audio, self.variables), windows,
                            self.batch_size)

  def embeddings(self, crops: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lip, audio) embeddings [N, D] of every window of a clip.

    Args:
      crops: uint8 RGB [T, 224, 224, 3] face crops at 25 fps.
      audio: int16 [S] samples at 16 kHz, starting with frame 0.
    """
    count = num_windows(len(crops), len(audio))
    if count < 1:
      raise ValueError(f"a clip of {len(crops)} frames and {len(audio)} audio samples is too "
                       f"short for SyncNet (at least {MIN_FRAMES} frames of video and audio)")
    return self.lip_embeddings(crops, count), self.audio_embeddings(audio, count)

  def score(self, crops: np.ndarray, audio: np.ndarray) -> SyncScores:
    """Sc, SD and offset of a 25 fps face-crop clip and its int16 16 kHz audio."""
    return offset_scores(*self.embeddings(crops, audio), vshift=self.vshift)


def _bilinear_weights(length: int, size: int) -> np.ndarray:
  """[size, length] interpolation matrix of cv2's INTER_LINEAR along one axis: output i samples
  (i + 0.5) * length / size - 0.5, clamped to the edge pixels."""
  source = (np.arange(size) + 0.5) * (length / size) - 0.5
  low = np.floor(source).astype(int)
  fraction = np.where(low < 0, 0.0, source - low)
  low = np.clip(low, 0, length - 1)
  fraction = np.where(low >= length - 1, 0.0, fraction)
  weights = np.zeros((size, length))
  np.add.at(weights, (np.arange(size), low), 1.0 - fraction)
  np.add.at(weights, (np.arange(size), np.minimum(low + 1, length - 1)), fraction)
  return weights


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, C] -> [size, size, C] as cv2.resize's INTER_LINEAR: half-pixel centres,
  no anti-aliasing, edge samples clamped (cv2 rounds in fixed point; this in float64)."""
  image = np.asarray(image)
  height, width, channels = image.shape
  rows = _bilinear_weights(height, size)  # [size, H]
  columns = _bilinear_weights(width, size)  # [size, W]
  resized = rows @ image.astype(np.float64).reshape(height, width * channels)  # [size, W * C]
  resized = resized.reshape(size, width, channels).transpose(1, 0, 2).reshape(width, -1)
  resized = (columns @ resized).reshape(size, size, channels).transpose(1, 0, 2)  # [i, j, C]
  return np.clip(np.round(resized), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class FaceCrops:
  """crops: uint8 [T', 224, 224, 3] of frames first .. last (the span with a tracked face)."""
  crops: np.ndarray
  first: int
  last: int


@dataclasses.dataclass(frozen=True)
class CropTrack:
  """The smoothed crop boxes of frames first .. last: half_size, centre_y, centre_x [T']."""
  half_size: np.ndarray
  centre_y: np.ndarray
  centre_x: np.ndarray
  first: int
  last: int


def landmark_boxes(found: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, int, int]:
  """Per-frame (left, top, right, bottom) boxes around the landmarks over the span from the
  first to the last frame with a face, gaps interpolated linearly (as `track_shot` does with its
  detections): (boxes [last - first + 1, 4], first, last)."""
  found = np.asarray(found, bool)
  if not found.any():
    raise ValueError("no face in any frame")
  indices = np.flatnonzero(found)
  first, last = int(indices[0]), int(indices[-1])
  boxes = np.concatenate([landmarks.min(axis=1), landmarks.max(axis=1)], axis=-1)  # [T, 4]
  span = np.arange(first, last + 1)
  boxes = np.stack([np.interp(span, indices, boxes[indices, i]) for i in range(4)], axis=-1)
  return boxes, first, last


def crop_track(found: np.ndarray, landmarks: np.ndarray) -> CropTrack:
  """`crop_video`'s box track: half size max(w, h) / 2 and centre, each median-filtered over 13
  frames (scipy's medfilt, zero-padded at the ends as in the reference)."""
  boxes, first, last = landmark_boxes(found, landmarks)
  half_size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
  centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
  centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
  return CropTrack(*(scipy_signal.medfilt(values, kernel_size=SMOOTHING_FRAMES)
                     for values in (half_size, centre_y, centre_x)), first=first, last=last)


def crop_frame(frame: np.ndarray, half_size: float, centre_y: float, centre_x: float,
               size: int = syncnet_lib.LIP_SIZE) -> np.ndarray:
  """One frame's crop: padded by int(s (1 + 2 cs)) with grey 110, rows y - s .. y + s (1 + 2 cs),
  columns x -+ s (1 + cs), resized to `size` (cs = CROP_SCALE)."""
  pad = int(half_size * (1 + 2 * CROP_SCALE))
  padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
  y, x = centre_y + pad, centre_x + pad
  face = padded[int(y - half_size):int(y + half_size * (1 + 2 * CROP_SCALE)),
                int(x - half_size * (1 + CROP_SCALE)):int(x + half_size * (1 + CROP_SCALE))]
  if not face.size:
    raise ValueError(f"empty face crop (box size {half_size:.1f})")
  return resize_bilinear(face, size)


def crop_faces(frames: np.ndarray, found: np.ndarray, landmarks: np.ndarray,
               size: int = syncnet_lib.LIP_SIZE) -> FaceCrops:
  """syncnet_python's `crop_video` on the landmark boxes of `frames` (uint8 RGB [T, H, W, 3])."""
  track = crop_track(found, landmarks)
  crops = [crop_frame(frame, track.half_size[index], track.centre_y[index],
                      track.centre_x[index], size)
           for index, frame in enumerate(frames[track.first:track.last + 1])]
  return FaceCrops(crops=np.stack(crops), first=track.first, last=track.last)


def clip_audio(audio: np.ndarray, first: int, last: int) -> np.ndarray:
  """The audio of frames first .. last (`crop_video`'s ffmpeg -ss / -to cut)."""
  return np.asarray(audio)[first * SAMPLES_PER_FRAME:(last + 1) * SAMPLES_PER_FRAME]


def prepare_crops(frames: np.ndarray, face_cropped: bool,
                  tracker: Optional[face_tracker.FaceTracker] = None) -> FaceCrops:
  """The 224 px face crops SyncNet sees: the frames themselves (resized to 224 if they are not)
  with `face_cropped`, else `crop_faces` on the tracker's landmarks."""
  frames = np.asarray(frames)
  size = syncnet_lib.LIP_SIZE
  if face_cropped:
    if frames.shape[1:3] != (size, size):
      frames = np.stack([resize_bilinear(frame, size) for frame in frames])
    return FaceCrops(crops=frames, first=0, last=len(frames) - 1)
  found, landmarks = (tracker or face_tracker.FaceTracker()).track_landmarks(frames)
  return crop_faces(frames, found, landmarks)
