"""CAPP score: how well a clip's head motion goes with its speech (VASA-1's contrastive audio-pose
score), with the encoders `python -m vasa_jax.train --config=configs/capp.py` trains.

For a clip of T frames at 25 fps, windows of L = 75 frames (3 s) start every `hop` frames
(s_k = 0, hop, 2 hop, ... <= T - L). With the audio encoder f_a, the pose encoder f_p, A_k the
speech features of window k and P_k its pose sequence,

  CAPP = (1 / K) sum_k cos(f_a(A_k), f_p(P_k)).

The pose of a frame is 6 values: yaw, pitch, roll (degrees, / 10), the face centre (mean of the 68
landmarks) as a fraction of the frame width and height minus 0.5 (/ 0.05), and the distance proxy
(/ 0.05); each window is centred on its own mean, so CAPP sees head motion, not where the head
points on average. Speech features (log-mel or Wav2Vec2, one per video frame,
`vasa_jax.data.speech_features`) are centred per window too. Training data take the pose from
the records' annotations, the evaluator from the tracker's measurements of the video; both in
the pixels of the frames.

A trained CAPP is a directory with `capp.json` (the model and audio-feature settings) and
`capp_params.msgpack` (the parameters, flax msgpack: no code is executed when reading it).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax.models import capp as capp_lib

CONFIG_FILE = "capp.json"
PARAMS_FILE = "capp_params.msgpack"
# Divisors of the pose values: yaw, pitch, roll (degrees), x, y (fraction of the frame), distance.
POSE_UNITS = np.array([10.0, 10.0, 10.0, 0.05, 0.05, 0.05], np.float32)
# The evaluator's window step: 1 s at 25 fps (windows overlap by 2 s).
HOP_FRAMES = 25


def pose_features(head_pose: np.ndarray, landmarks: np.ndarray, distance: np.ndarray,
                  frame_height: int, frame_width: int) -> np.ndarray:
  """Per-frame pose [T, 6] (divided by POSE_UNITS) from head angles [T, 3] (degrees), landmarks
  [T, 68, 2] (x, y pixels of frames of the given size) and the distance proxy [T]."""
  centre = np.asarray(landmarks, np.float64).mean(axis=1)  # [T, 2] x, y
  position = centre / np.array([frame_width, frame_height]) - 0.5
  values = np.concatenate([np.asarray(head_pose, np.float64), position,
                           np.asarray(distance, np.float64)[:, None]], axis=1)
  return (values / POSE_UNITS).astype(np.float32)


def record_pose(record: Mapping[str, Any]) -> np.ndarray:
  """`pose_features` of a clip record's annotations (landmarks in the record's frame pixels)."""
  annotations, size = record["annotations"], record["resolution"]
  return pose_features(annotations["head_pose"], annotations["landmarks"],
                       annotations["distance"], size, size)


def centred_windows(values: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
  """Windows [K, length, F] of per-frame values [T, F] starting at `starts` [K], each minus its
  mean over time."""
  windows = np.stack([values[start:start + length] for start in starts]).astype(np.float32)
  return windows - windows.mean(axis=1, keepdims=True)


def window_starts(num_frames: int, length: int, hop: int = HOP_FRAMES,
                  margin: int = 0) -> np.ndarray:
  """Starts of the windows of `length` frames every `hop` frames, `margin` frames clear of either
  end (room for shifted copies); empty if the clip is too short."""
  return np.arange(margin, num_frames - length - margin + 1, hop)


def save(directory: str, params: Any, model_config: ml_collections.ConfigDict,
         audio_config: ml_collections.ConfigDict, fps: float) -> None:
  """Writes a trained CAPP (`CONFIG_FILE`, `PARAMS_FILE`) into `directory`."""
  os.makedirs(directory, exist_ok=True)
  settings = {"model": model_config.to_dict(), "audio": audio_config.to_dict(), "fps": fps}
  with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as file:
    json.dump(settings, file, indent=2)
  with open(os.path.join(directory, PARAMS_FILE), "wb") as file:
    file.write(flax.serialization.msgpack_serialize(jax.device_get(params)))


class CAPPScorer:
  """A trained CAPP read from its directory; scores clips and windows."""

  def __init__(self, directory: str):
    # Imported here: the featurisers pull in transformers (seconds), which the evaluator's other
    # metrics do not need.
    from vasa_jax.data import speech_features  # pylint: disable=g-import-not-at-top

    paths = [os.path.join(directory, name) for name in (CONFIG_FILE, PARAMS_FILE)]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
      raise FileNotFoundError(f"CAPP checkpoint {directory!r} lacks {', '.join(missing)} (train "
                              "one with `python -m vasa_jax.train --config=configs/capp.py`)")
    with open(paths[0], encoding="utf-8") as file:
      settings = json.load(file)
    self.fps = float(settings["fps"])
    self.featurizer = speech_features.from_config(
        ml_collections.ConfigDict(settings["audio"]), self.fps)
    self.model = capp_lib.CAPP.from_config(ml_collections.ConfigDict(settings["model"]),
                                           self.featurizer.dim)
    with open(paths[1], "rb") as file:
      params = flax.serialization.msgpack_restore(file.read())
    self.params = self._checked(params, paths[1])
    self.window = self.model.window
    self._encode = jax.jit(lambda params, audio, pose: self.model.apply(
        {"params": params}, audio, pose)[:2])

  def _checked(self, params: Any, path: str) -> Any:
    """`params` if every tensor has the model's shape, else a ValueError naming the first."""
    expected = jax.eval_shape(self.model.init, jax.random.key(0),
                              *self.model.example_inputs())["params"]
    expected = flax.traverse_util.flatten_dict(flax.core.meta.unbox(expected), sep="/")
    found = flax.traverse_util.flatten_dict(params, sep="/")
    for name, spec in expected.items():
      if name not in found:
        raise ValueError(f"CAPP parameters {path!r} lack tensor {name} (shape {spec.shape})")
      if tuple(found[name].shape) != tuple(spec.shape):
        raise ValueError(f"CAPP parameters {path!r}: tensor {name} has shape "
                         f"{tuple(found[name].shape)}, the model expects {tuple(spec.shape)}")
    extra = sorted(set(found) - set(expected))
    if extra:
      raise ValueError(f"CAPP parameters {path!r} hold tensors the model lacks: {extra[:3]}")
    return jax.tree.map(jnp.asarray, flax.traverse_util.unflatten_dict(found, sep="/"))

  def audio_features(self, waveform: np.ndarray) -> np.ndarray:
    """Speech features [T, A] (one per video frame) of a float waveform [N] at 16 kHz."""
    return self.featurizer(waveform)

  def window_cosines(self, audio: np.ndarray, pose: np.ndarray, starts: np.ndarray,
                     pose_shift: int = 0, pose_scale: float = 1.0) -> np.ndarray:
    """cos(f_a(A_k), f_p(P_k)) [K] for windows at `starts` of speech features [T, A] and pose
    [T, 6]; the pose window starts `pose_shift` frames later and its motion is scaled by
    `pose_scale` (the calibration tables)."""
    audio_windows = centred_windows(audio, starts, self.window)
    pose_windows = centred_windows(pose, starts + pose_shift, self.window) * pose_scale
    audio_embeddings, pose_embeddings = self._encode(self.params, audio_windows, pose_windows)
    return np.asarray(jnp.sum(audio_embeddings * pose_embeddings, axis=-1), np.float64)

  def score(self, waveform: np.ndarray, pose: np.ndarray,
            hop: int = HOP_FRAMES) -> Optional[float]:
    """CAPP of a clip: float waveform [N] at 16 kHz and pose [T, 6] (`pose_features`); None when
    the clip is shorter than one window."""
    audio = self.audio_features(waveform)
    num_frames = min(len(audio), len(pose))
    starts = window_starts(num_frames, self.window, hop)
    if len(starts) == 0:
      return None
    return float(self.window_cosines(audio, pose, starts).mean())
