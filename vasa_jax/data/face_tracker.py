"""Face tracking for data preparation and inference: detection, landmarks, crops, annotations.

dlib's HOG face detector runs every `detect_every` frames, and on any frame where the face patch no
longer matches the last detection's (the track is lost); dlib's 68-point shape predictor runs on
every frame, seeded in between detections by the previous frame's landmarks. Per frame, the
landmarks give (see `vasa_jax.data.head_geometry`) a weak-perspective head pose, a rotation-invariant
face size, the crop box, the distance proxy and, with the irises found in the image
(`vasa_jax.data.face_image`), the gaze. The crop box is smoothed over time and every frame is resampled
to a square `resolution` crop; the annotations follow `vasa_jax.data.records` (landmarks in crop
pixels, crop_box in source pixels).

A clip is rejected with a reason from SKIP_REASONS: no face in too many frames, a second face of
comparable size in a substantial share of the detection frames, a face too small in the frame or for
the crop resolution (its crop would be enlarged more than `max_upscale` times), or a blurry face
(low variance of the Laplacian on the face resampled to a fixed size).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
from typing import Any

import numpy as np
from PIL import Image

from vasa_jax.data import face_image
from vasa_jax.data import head_geometry
from vasa_jax.data import records

SKIP_REASONS = ("no_face", "multiple_faces", "face_too_small", "blurry")

# Side of the grey face patches compared between frames to notice a lost track.
FACE_PATCH_SIZE = 24


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
  """Face tracker settings."""
  # Side of the aligned square crops in pixels.
  resolution: int = 512
  # Crop side = crop_scale x face size, where the face size is the FFHQ alignment measure
  # max(2 x eye distance, 1.8 x eye-to-mouth distance) of the fitted 3D mean face (it does not
  # shrink when the head turns): 2.0 gives FFHQ's framing (face, forehead, chin and some neck).
  crop_scale: float = 2.0
  # Run the face detector every N frames (and on any frame where the track is lost); landmarks
  # run on every frame.
  detect_every: int = 5
  # Between detections, the face patch at the tracked box is compared with the one at the last
  # detection (normalised cross-correlation of 24x24 grey patches); below this the detector runs
  # on the frame (the face moved fast, was occluded, or is gone).
  redetect_below_correlation: float = 0.5
  # dlib detector upsampling: 1 finds faces down to ~40 px (0 only down to ~80 px).
  upsample: int = 1
  # Frames whose longer side exceeds this are downscaled for detection (not for landmarks): HOG
  # time grows with the pixel count and talking-head faces are large.
  detection_max_side: int = 640
  # dlib detector score threshold (`adjust_threshold`); detections below it are ignored.
  detection_threshold: float = 0.0
  # A face smaller than this fraction of the frame's short side -> face_too_small ...
  min_face_fraction: float = 0.1
  # ... or one whose crop (crop_scale x face size, in source pixels) would be enlarged more than
  # this many times to `resolution` pixels: a smaller target keeps smaller faces (at crop_scale 2
  # and 2x, a 128 px target needs a face size of 32 px, about 16 px between the eyes; 512 px
  # needs 128 px).
  max_upscale: float = 2.0
  # More frames than this fraction without a face -> no_face.
  max_missing_fraction: float = 0.3
  # A second face counts only if its detector box side is >= this ratio x the main face's ...
  second_face_ratio: float = 0.6
  # ... and its detector score is at least this (clear frontal faces score ~1-3, false detections
  # mostly below 0.3; SynthTalk's procedural heads score 0.1-1.5) ...
  second_face_min_score: float = 0.3
  # ... and it shows in at least this fraction of the detection frames -> multiple_faces.
  multiple_faces_fraction: float = 0.3
  # Sharpness below this -> blurry. Sharpness is the variance of the Laplacian of the face region
  # (one face size square resampled to 128 px, grey levels 0-255), median over the detection
  # frames. SynthTalk heads measure 90-500, 15-55 after a Gaussian blur of 1 px (at 224 px
  # frames) and 3-9 after 2 px; still to be calibrated on real video (see ClipTrack.measurements).
  blur_threshold: float = 8.0
  # Standard deviation, in seconds, of the Gaussian that smooths the crop centre and size over time.
  smoothing_seconds: float = 0.2
  # Mean eye aspect ratio below this is a blink: the gaze keeps the previous frame's eye direction.
  blink_ear_threshold: float = 0.18


@dataclasses.dataclass
class ClipTrack:
  """The tracker's result for one clip (or one photo).

  Attributes:
    skip_reason: None if the clip is usable, else one of SKIP_REASONS.
    crops: [T, resolution, resolution, 3] uint8 aligned crops, None when skipped.
    annotations: the `vasa_jax.data.records` annotations dict, None when skipped.
    measurements: what the skip decisions were made from (face_fraction, face_pixels,
      crop_upscale, missing_fraction, second_face_fraction, sharpness), as far as computed; for
      logs and for calibrating the thresholds.
  """
  skip_reason: str | None
  crops: np.ndarray | None
  annotations: dict[str, Any] | None
  measurements: dict[str, float] = dataclasses.field(default_factory=dict)


def landmark_model_path() -> str:
  """dlib's 68-point landmark model file, shipped by the `face-recognition-models` wheel.

  Found without importing that package, whose `__init__` needs `pkg_resources` (gone from
  recent setuptools).
  """
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        "the face tracker needs the `face-recognition-models` package: "
        "pip install -e '.[dataprep]'")
  path = os.path.join(list(spec.submodule_search_locations)[0], "models",
                      "shape_predictor_68_face_landmarks.dat")
  if not os.path.exists(path):
    raise FileNotFoundError(f"dlib's landmark model is missing from its package: {path}")
  return path


@functools.lru_cache(maxsize=1)
def _dlib_models():
  """The HOG detector and the 68-point shape predictor, loaded once per process."""
  import dlib  # pylint: disable=g-import-not-at-top

  return (dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(landmark_model_path()))


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two (left, top, right, bottom) boxes."""
  width = min(a[2], b[2]) - max(a[0], b[0])
  height = min(a[3], b[3]) - max(a[1], b[1])
  if width <= 0 or height <= 0:
    return 0.0
  inter = width * height
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _box_side(box: np.ndarray) -> float:
  return math.sqrt((box[2] - box[0]) * (box[3] - box[1]))


def _face_patch(gray: np.ndarray, box: np.ndarray) -> np.ndarray:
  """The box's square as a FACE_PATCH_SIZE^2 vector, zero mean and unit norm (zeros if flat)."""
  side = _box_side(box)
  centre = 0.5 * (box[:2] + box[2:])
  patch = face_image.crop_square(gray, np.array([centre[0], centre[1], side]), FACE_PATCH_SIZE)
  patch = patch.astype(np.float32).reshape(-1)
  patch -= patch.mean()
  norm = np.linalg.norm(patch)
  return patch / norm if norm > 2.0 * FACE_PATCH_SIZE else np.zeros_like(patch)


def _patch_correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Normalised cross-correlation of two `_face_patch` vectors (0 if either is flat)."""
  return float(a @ b)


def _landmark_centre_and_spread(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
  centre = landmarks.mean(0)
  return centre, float(np.sqrt(((landmarks - centre) ** 2).sum(-1).mean()))


def _interpolate_missing(values: np.ndarray, found: np.ndarray) -> np.ndarray:
  """Fills frames where `found` is False by linear interpolation over time (edges: nearest)."""
  if found.all():
    return values
  time = np.arange(len(values))
  flat = values.reshape(len(values), -1)
  filled = np.stack([np.interp(time, time[found], column[found]) for column in flat.T], -1)
  return filled.reshape(values.shape).astype(values.dtype)


def _fill_forward_then_backward(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Replaces invalid rows by the last valid row before them (leading ones: the first valid)."""
  index = np.where(valid, np.arange(len(values)), -1)
  index = np.maximum.accumulate(index)
  index[index < 0] = np.argmax(valid)
  return values[index]


@dataclasses.dataclass
class _RawTrack:
  """Per-frame results of the tracking pass, before interpolation and smoothing."""
  found: np.ndarray  # bool [T]
  landmarks: np.ndarray  # [T, 68, 2] source pixels
  head_pose: np.ndarray  # [T, 3] degrees
  crop_box: np.ndarray  # [T, 3] unsmoothed, source pixels
  pose_scale: np.ndarray  # [T] pixels per model millimetre
  interocular: np.ndarray  # [T] frontal-equivalent inter-ocular distance, pixels
  eye_direction: np.ndarray  # [T, 3] gaze direction in the head frame
  eye_valid: np.ndarray  # bool [T]: eyes open and found
  sharpness: list[float]
  detection_frames: int
  second_face_frames: int


class FaceTracker:
  """Tracks the main face of a clip (or finds the face of a photo) and crops and annotates it."""

  def __init__(self, config: TrackerConfig = TrackerConfig()):
    self.config = config
    self._dlib, self._detector, self._predictor = _dlib_models()

  def _detect(self, gray: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Face boxes (left, top, right, bottom in source pixels) and detector scores."""
    config = self.config
    height, width = gray.shape
    shrink = min(1.0, config.detection_max_side / max(height, width))
    image = gray
    if shrink < 1.0:
      image = np.asarray(Image.fromarray(gray).resize(
          (max(1, round(width * shrink)), max(1, round(height * shrink))),
          Image.Resampling.BILINEAR))
    rects, scores, _ = self._detector.run(image, config.upsample, config.detection_threshold)
    return [(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64) / shrink,
             float(score)) for r, score in zip(rects, scores)]

  def _landmarks(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
    rect = self._dlib.rectangle(int(round(box[0])), int(round(box[1])),
                                int(round(box[2])) - 1, int(round(box[3])) - 1)
    shape = self._predictor(gray, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

  @staticmethod
  def _choose_main(detections: list[tuple[np.ndarray, float]],
                   previous_box: np.ndarray | None) -> int | None:
    """Index of the main face: the largest at first, later the one following the previous box."""
    if not detections:
      return None
    if previous_box is None:
      return int(np.argmax([_box_side(box) for box, _ in detections]))
    overlaps = [_box_iou(box, previous_box) for box, _ in detections]
    best = int(np.argmax(overlaps))
    if overlaps[best] >= 0.2:
      return best
    previous_centre = 0.5 * (previous_box[:2] + previous_box[2:])
    distances = [np.linalg.norm(0.5 * (box[:2] + box[2:]) - previous_centre)
                 for box, _ in detections]
    nearest = int(np.argmin(distances))
    return nearest if distances[nearest] < _box_side(previous_box) else None

  def _has_second_face(self, detections: list[tuple[np.ndarray, float]], main: int) -> bool:
    main_box = detections[main][0]
    return any(
        index != main and score >= self.config.second_face_min_score
        and _box_side(box) >= self.config.second_face_ratio * _box_side(main_box)
        and _box_iou(box, main_box) < 0.3
        for index, (box, score) in enumerate(detections))

  def _track_frames(self, frames: np.ndarray, give_up: bool = True) -> _RawTrack | None:
    """Detection + landmarks + per-frame geometry; None once too many frames lack a face
    (`give_up`; otherwise every frame is tried)."""
    config = self.config
    num_frames = len(frames)
    max_missing = config.max_missing_fraction * num_frames if give_up else np.inf
    raw = _RawTrack(
        found=np.zeros(num_frames, bool),
        landmarks=np.zeros((num_frames, records.NUM_LANDMARKS, 2)),
        head_pose=np.zeros((num_frames, 3)), crop_box=np.zeros((num_frames, 3)),
        pose_scale=np.zeros(num_frames), interocular=np.zeros(num_frames),
        eye_direction=np.zeros((num_frames, 3)), eye_valid=np.zeros(num_frames, bool),
        sharpness=[], detection_frames=0, second_face_frames=0)
    tracking = False
    previous_box = None
    frames_since_detection = 0
    for t, frame in enumerate(frames):
      gray = face_image.to_gray(frame)
      box = None
      if tracking and frames_since_detection < config.detect_every:
        # Move and scale the last detector box with the landmarks since that detection; keep it if
        # the face there still looks like the detected one.
        centre, spread = _landmark_centre_and_spread(landmarks)
        half_size = 0.5 * (detection_box[2:] - detection_box[:2]) * spread / detection_spread
        box_centre = 0.5 * (detection_box[:2] + detection_box[2:]) + centre - detection_centre
        box = np.concatenate([box_centre - half_size, box_centre + half_size])
        if (_patch_correlation(_face_patch(gray, box), detection_patch)
            < config.redetect_below_correlation):
          box = None
      measure_sharpness = box is None
      if box is None:
        detections = self._detect(gray)
        raw.detection_frames += 1
        main = self._choose_main(detections, previous_box)
        if main is None:
          tracking = False
          if t + 1 - raw.found[:t + 1].sum() > max_missing:
            return None
          continue
        raw.second_face_frames += self._has_second_face(detections, main)
        box = detection_box = detections[main][0]
        detection_patch = _face_patch(gray, box)
        frames_since_detection = 0
        tracking = True
      landmarks = self._landmarks(gray, box)
      if frames_since_detection == 0:
        detection_centre, detection_spread = _landmark_centre_and_spread(landmarks)
      frames_since_detection += 1
      previous_box = box
      self._measure_frame(raw, t, gray, landmarks, measure_sharpness)
    return raw

  def _measure_frame(self, raw: _RawTrack, t: int, gray: np.ndarray, landmarks: np.ndarray,
                     measure_sharpness: bool) -> None:
    """Head pose, crop box, eye direction (and sharpness) of one frame into `raw`."""
    pose = head_geometry.fit_head_pose(landmarks)
    raw.found[t] = True
    raw.landmarks[t] = landmarks
    raw.head_pose[t] = pose.angles()
    raw.crop_box[t] = head_geometry.crop_box(pose, self.config.crop_scale)
    raw.pose_scale[t] = pose.scale
    raw.interocular[t] = head_geometry.interocular_distance(pose, landmarks)
    if head_geometry.eye_aspect_ratio(landmarks) >= self.config.blink_ear_threshold:
      iris_radius = pose.scale * head_geometry.IRIS_RADIUS_MM
      pupils = np.stack([face_image.locate_pupil(gray, landmarks[eye], iris_radius)
                         for eye in (head_geometry.RIGHT_EYE, head_geometry.LEFT_EYE)])
      gaze = head_geometry.gaze_vector_from_pupils(pose, landmarks, pupils)
      raw.eye_direction[t] = pose.rotation.T @ gaze
      raw.eye_valid[t] = True
    if measure_sharpness:
      raw.sharpness.append(
          face_image.face_sharpness(gray, raw.crop_box[t, :2], head_geometry.face_size(pose)))

  def _skip_reason(self, raw: _RawTrack, frame_shape: tuple[int, ...],
                   measurements: dict[str, float], check_quality: bool) -> str | None:
    config = self.config
    measurements["missing_fraction"] = 1.0 - float(raw.found.mean())
    if measurements["missing_fraction"] > config.max_missing_fraction or not raw.found.any():
      return "no_face"
    measurements["second_face_fraction"] = raw.second_face_frames / raw.detection_frames
    if measurements["second_face_fraction"] >= config.multiple_faces_fraction:
      return "multiple_faces"
    face_pixels = float(np.median(raw.pose_scale[raw.found])) * head_geometry.MODEL_FACE_SIZE_MM
    measurements["face_pixels"] = face_pixels
    measurements["face_fraction"] = face_pixels / min(frame_shape[:2])
    measurements["crop_upscale"] = config.resolution / (config.crop_scale * face_pixels)
    measurements["sharpness"] = float(np.median(raw.sharpness))
    if not check_quality:
      return None
    if (measurements["face_fraction"] < config.min_face_fraction
        or measurements["crop_upscale"] > config.max_upscale):
      return "face_too_small"
    if measurements["sharpness"] < config.blur_threshold:
      return "blurry"
    return None

  def _track(self, frames: np.ndarray, fps: float, check_quality: bool) -> ClipTrack:
    frames = np.asarray(frames)
    if frames.ndim != 4 or not len(frames) or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise ValueError(
          f"frames must be uint8 [T > 0, H, W, 3], got {frames.dtype} {frames.shape}")
    raw = self._track_frames(frames)
    if raw is None:
      return ClipTrack("no_face", None, None)
    measurements: dict[str, float] = {}
    skip_reason = self._skip_reason(raw, frames.shape[1:], measurements, check_quality)
    if skip_reason is not None:
      return ClipTrack(skip_reason, None, None, measurements)

    found = raw.found
    landmarks = _interpolate_missing(raw.landmarks, found)
    head_pose = _interpolate_missing(raw.head_pose, found)
    interocular = _interpolate_missing(raw.interocular, found)
    crop_box = _interpolate_missing(raw.crop_box, found)
    crop_box = face_image.smooth_crop_boxes(crop_box, self.config.smoothing_seconds * fps)

    # Eye direction in the head: closed or missing eyes keep the previous one; straight ahead if
    # the eyes were never seen open. Camera-space gaze = head rotation x eye direction.
    eye_valid = raw.eye_valid & found
    if eye_valid.any():
      eye_direction = _fill_forward_then_backward(raw.eye_direction, eye_valid)
    else:
      eye_direction = np.tile([0.0, 0.0, 1.0], (len(frames), 1))
    rotations = np.stack([head_geometry.angles_to_rotation(*angles) for angles in head_pose])
    gaze = head_geometry.gaze_angles(np.einsum("tij,tj->ti", rotations, eye_direction))

    resolution = self.config.resolution
    crops = np.stack([face_image.crop_square(frame, box, resolution)
                      for frame, box in zip(frames, crop_box)])
    annotations = {
        "landmarks": face_image.source_to_crop(landmarks, crop_box, resolution).astype(np.float32),
        "head_pose": head_pose.astype(np.float32),
        "gaze": gaze.astype(np.float32),
        "distance": head_geometry.distance_proxy(
            interocular, min(frames.shape[1:3])).astype(np.float32),
        "crop_box": crop_box.astype(np.float32),
        "face_found": found.copy(),
        "emotion": np.zeros((len(frames), 0), np.float32),
        "emotion_available": False,
    }
    return ClipTrack(None, crops, annotations, measurements)

  def track_clip(self, frames: np.ndarray, fps: float, check_quality: bool = True) -> ClipTrack:
    """Tracks the main face through a clip.

    Args:
      frames: uint8 [T, H, W, 3] RGB.
      fps: frame rate (sets the crop smoothing window).
      check_quality: reject small or blurry faces (data preparation); without it only a missing
        face or several faces reject the clip (measuring generated video).

    Returns:
      The ClipTrack; skip_reason says why the clip is unusable (no_face, multiple_faces,
      face_too_small, blurry, checked in this order).
    """
    return self._track(frames, fps, check_quality=check_quality)

  def track_landmarks(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame landmarks of the main face, however many frames lack one (for scoring
    generated video): (found bool [T], landmarks float [T, 68, 2] in frame pixels, 0 where not
    found). Detection and landmarks run exactly as in `track_clip`."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or not len(frames) or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise ValueError(
          f"frames must be uint8 [T > 0, H, W, 3], got {frames.dtype} {frames.shape}")
    raw = self._track_frames(frames, give_up=False)
    return raw.found.copy(), raw.landmarks.copy()

  def track_image(self, image: np.ndarray) -> ClipTrack:
    """Finds, crops and annotates the face of one photo (inference input).

    Only a missing face ("no_face") or several comparable faces ("multiple_faces") reject a photo:
    size and sharpness are the user's choice (they are in `measurements`).

    Args:
      image: uint8 [H, W, 3] RGB.

    Returns:
      A ClipTrack with T = 1.
    """
    return self._track(np.asarray(image)[None], fps=1.0, check_quality=False)
