"""Sliding-window motion generation with the stage-2 diffusion transformer (VASA-1 section 3.2).

  sampler = MotionSampler(motion_config, state["ema_params"], state["statistics"])
  motion = sampler.generate(audio_features, gaze=(0.0, 0.0), distance=1.0, seed=0)  # [T, M]

  stream = sampler.start_stream(gaze=(0.0, 0.0), seed=0)
  for features in chunks_of_live_audio_features:  # each [c, A]
    motion = stream.push(features)  # [n, M]: the windows completed so far
  motion = stream.finish()  # the last, shorter window

A clip is generated window by window (`window_plan`): W frames at a time, each window conditioned
on the last K generated frames and their audio features (X_pre, A_pre); the first window has none
(drop_previous, the learned null embedding, as in training). A window with fewer than W frames of
audio (the end of a clip) marks the missing frames invalid (`audio_valid`:
their audio tokens are the learned null) and keeps only its first frames. Window i of a run with
seed s draws its noise from `fold_in(key(s), i)`, so a seed fixes the result. A stream
(`MotionStream`) generates the same windows as their audio arrives: exactly the offline result,
at the same cost per frame.

Controls. gaze (theta, phi) in degrees and the head distance are the clip-level `gaze_main` and
`distance_main` of the stage-2 data (`data_prep.extract_motion`); emotion is the [E] vector. A
control given as None is DROPPED: the model sees its learned null embedding, i.e. it samples the
control's distribution learned under condition dropout. With emotion_dim 0 there is nothing to
give and the emotion token stays the model's constant. A `pose_control.PoseControl` (head motion
scale, driving pose) changes the z_pose of the returned frames; each window is still conditioned
on the generated frames before it. Classifier-free guidance uses one batched
network call per step with scales lambda_audio and lambda_gaze (traced: changing them does not
recompile); a dropped gaze makes its guidance term zero.

Normalisation: motion, audio features, gaze and distance are standardised with the checkpoint's
statistics exactly as the trainer did (`vasa_jax.trainers.motion.model_inputs`); the model
predicts normalised X^0, which is denormalised before it is returned. Emotion is used raw.

One window function is compiled for the sampler's static shapes (W, K, M, A, E, method) and each
number of denoising steps used; `trace_count` counts its compilations.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax.diffusion import guidance
from vasa_jax.diffusion import sampling
from vasa_jax.diffusion import schedules
from vasa_jax.diffusion.normalization import MotionStatistics
from vasa_jax.inference import pose_control as pose_control_lib
from vasa_jax.models import motion_dit

# The statistics a stage-2 checkpoint holds, and the shape of each mean and std ("M", "A": the
# motion and audio widths).
STATISTICS_SHAPES = {"motion": ("M",), "audio_features": ("A",), "gaze_main": (2,),
                     "distance_main": ()}


def window_plan(num_frames: int, window: int) -> list[tuple[int, int]]:
  """(start, length) of each window covering frames [0, num_frames): full windows of `window`
  frames, then one shorter window with the remainder (if any)."""
  if num_frames < 1:
    raise ValueError(f"need at least one frame to generate, got {num_frames}")
  return [(start, min(window, num_frames - start)) for start in range(0, num_frames, window)]


def statistics_shapes(model_config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
  """{statistic name: shape of its mean and std} for `config.model`."""
  sizes = {"M": model_config.motion_dim, "A": model_config.audio_dim}
  return {name: tuple(sizes.get(axis, axis) for axis in shape)
          for name, shape in STATISTICS_SHAPES.items()}


class MotionSampler:
  """Generates motion [T, M] from audio features [T, A] with a trained MotionDiT.

  config: the stage-2 run's config (configs/motion.py); params: MotionDiT parameters (the EMA
  weights); statistics: the checkpoint's {name: {"mean", "std"}} (see `STATISTICS_SHAPES`).
  num_steps, method, eta: sampling overrides of `config.sampling` (static: one compilation each;
  num_steps is the default of `start_stream`, which may ask for another).
  """

  def __init__(self, config: ml_collections.ConfigDict, params: Any,
               statistics: Mapping[str, Mapping[str, Any]], num_steps: Optional[int] = None,
               method: Optional[str] = None, eta: Optional[float] = None):
    self.config = config
    self.model = motion_dit.MotionDiT.from_config(config.model)
    self.window = self.model.window  # W
    self.num_previous = self.model.num_previous  # K
    self.motion_dim = self.model.motion_dim  # M
    self.audio_dim = self.model.audio_dim  # A
    self.emotion_dim = self.model.emotion_dim  # E
    self.num_steps = int(num_steps or config.sampling.num_steps)
    self.method = method or config.sampling.method
    self.eta = float(config.sampling.eta if eta is None else eta)
    if self.method not in sampling.SAMPLING_METHODS:
      raise ValueError(f"unknown sampling method {self.method!r}; choose one of "
                       f"{sampling.SAMPLING_METHODS}")
    self.schedule = schedules.make_schedule(config.diffusion.schedule,
                                            config.diffusion.num_steps)
    sampling.sampling_timesteps(self.schedule.num_steps, self.num_steps)  # checks num_steps
    self.statistics = {name: MotionStatistics(np.asarray(statistics[name]["mean"], np.float32),
                                              np.asarray(statistics[name]["std"], np.float32))
                       for name in STATISTICS_SHAPES}
    self.params = jax.device_put(params)
    self.prng_impl = config.get("prng_impl")
    self.trace_count = 0  # compilations of the window function
    self._window_fn = jax.jit(self._sample_window, static_argnames="num_steps")

  def _sample_window(self, params, conditions, drops, rng, lambda_audio, lambda_gaze, num_steps):
    """Traced body of the window function (see `sample_window`)."""
    self.trace_count += 1
    denoise_fn = guidance.with_guidance(
        motion_dit.make_denoise_fn(self.model, {"params": params}), lambda_audio, lambda_gaze)
    noise_rng, steps_rng = jax.random.split(rng)
    x_start = jax.random.normal(noise_rng, (1, self.window, self.motion_dim))  # X^T [1, W, M]
    return sampling.sample(denoise_fn, self.schedule, x_start, conditions, drops, steps_rng,
                           num_steps, self.method, self.eta)

  def sample_window(self, conditions: Mapping[str, Any], drops: Mapping[str, Any],
                    rng: jax.Array, lambda_audio: float, lambda_gaze: float,
                    num_steps: Optional[int] = None) -> jax.Array:
    """One guided window: normalised X^0 [1, W, M] (the compiled window function).

    conditions: `motion_dit.CONDITION_KEYS` -> normalised previous_motion [1, K, M],
      previous_audio [1, K, A], audio [1, W, A], gaze [1, 2], distance [1], emotion [1, E];
    drops: drop_previous, drop_gaze, drop_distance, drop_emotion [1] bool, audio_valid [1, W];
    rng: split into the initial noise X^T (first half) and the per-step noise of
      `sampling.sample` (second half);
    num_steps: denoising steps (default: the sampler's `num_steps`).
    """
    return self._window_fn(self.params, dict(conditions), dict(drops), rng,
                           jnp.float32(lambda_audio), jnp.float32(lambda_gaze),
                           num_steps=int(num_steps or self.num_steps))

  def _controls(self, gaze, distance, emotion) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """Normalised control conditions [1, ...] and their drop flags (None: dropped)."""
    if emotion is not None and np.shape(emotion) != (self.emotion_dim,):
      raise ValueError(f"emotion must have {self.emotion_dim} values, got shape "
                       f"{np.shape(emotion)}")
    if gaze is not None and np.shape(gaze) != (2,):
      raise ValueError(f"gaze must be (theta, phi), got shape {np.shape(gaze)}")
    gaze_value = np.zeros(2) if gaze is None else self.statistics["gaze_main"].normalize(
        np.asarray(gaze, np.float32))
    distance_value = 0.0 if distance is None else self.statistics["distance_main"].normalize(
        np.float32(distance))
    emotion_value = np.zeros(self.emotion_dim) if emotion is None else np.asarray(emotion)
    conditions = {"gaze": np.asarray(gaze_value, np.float32)[None],
                  "distance": np.asarray(distance_value, np.float32).reshape(1),
                  "emotion": np.asarray(emotion_value, np.float32)[None]}
    dropped = {"drop_gaze": gaze is None, "drop_distance": distance is None,
               "drop_emotion": emotion is None and self.emotion_dim > 0}
    return conditions, dropped

  def start_stream(self, gaze: Optional[Sequence[float]] = None,
                   distance: Optional[float] = None, emotion: Optional[Sequence[float]] = None,
                   seed: int = 0, lambda_audio: Optional[float] = None,
                   lambda_gaze: Optional[float] = None,
                   num_steps: Optional[int] = None,
                   pose_control: Optional[pose_control_lib.PoseControl] = None
                   ) -> "MotionStream":
    """A `MotionStream` with these controls (None: dropped), guidance scales (None: the
    config's `sampling.lambda_audio` / `lambda_gaze`), denoising steps (None: the sampler's
    `num_steps`; each new number compiles the window function once) and pose control (None: the
    generated z_pose as it is)."""
    conditions, dropped = self._controls(gaze, distance, emotion)
    num_steps = self.num_steps if num_steps is None else int(num_steps)
    sampling.sampling_timesteps(self.schedule.num_steps, num_steps)  # checks num_steps
    return MotionStream(
        self, conditions, dropped, jax.random.key(seed, impl=self.prng_impl),
        self.config.sampling.lambda_audio if lambda_audio is None else lambda_audio,
        self.config.sampling.lambda_gaze if lambda_gaze is None else lambda_gaze, num_steps,
        pose_control)

  def stream(self, feature_chunks: Iterable[np.ndarray], **controls) -> Iterator[np.ndarray]:
    """Motion [n, M] (n may be 0) for each chunk of audio features [c, A] as it arrives (the
    windows it completes, `MotionStream.push`), then the last window's at the end.
    `controls`: the keyword arguments of `start_stream`."""
    motion_stream = self.start_stream(**controls)
    for chunk in feature_chunks:
      yield motion_stream.push(chunk)
    yield motion_stream.finish()

  def generate(self, audio_features: np.ndarray, progress: bool = False,
               **controls) -> np.ndarray:
    """Motion [T, M] (denormalised [z_pose, z_dyn]) for audio features [T, A], T >= 1.

    `controls`: gaze, distance, emotion, seed, lambda_audio, lambda_gaze, num_steps,
    pose_control as for `start_stream`.
    progress: show a tqdm bar over the windows.
    """
    audio_features = np.asarray(audio_features, np.float32)
    plan = window_plan(len(audio_features), self.window)
    chunks = (audio_features[start:start + length] for start, length in plan)
    if progress:
      import tqdm  # pylint: disable=g-import-not-at-top
      chunks = tqdm.tqdm(chunks, total=len(plan), desc="motion", unit="window")
    return np.concatenate(list(self.stream(chunks, **controls)), axis=0)


class MotionStream:
  """Generates motion as audio features arrive, window by window as offline generation does.

  Build it with `MotionSampler.start_stream`. `push` takes features of any number of frames and
  returns the motion of every window they complete: window i (frames [iW, (i + 1)W)) is
  generated once its W frames of features are in, conditioned on the last K frames of window
  i - 1 (none for the first: drop_previous, as in training) with noise `fold_in(key, i)`; `finish`
  generates the last, shorter window (its missing frames marked invalid). These are exactly the
  windows of `MotionSampler.generate` on the same features (`window_plan`), so a stream gives
  the offline motion, at one window call per W frames. A window's frames are not shown before all
  W frames of its audio are in: the stream's latency is one window of audio.
  """

  def __init__(self, sampler: MotionSampler, controls: dict[str, np.ndarray],
               dropped: dict[str, bool], key: jax.Array, lambda_audio: float,
               lambda_gaze: float, num_steps: int,
               pose_control: Optional[pose_control_lib.PoseControl] = None):
    self.sampler = sampler
    self._controls = controls  # normalised gaze [1, 2], distance [1], emotion [1, E]
    self._dropped = {name: np.array([flag]) for name, flag in dropped.items()}  # [1] bool each
    self._key = key
    self._lambdas = (float(lambda_audio), float(lambda_gaze))
    self._num_steps = num_steps  # denoising steps per window
    self._pose_control = pose_control  # applied to the returned frames only
    # The last (up to K) generated frames, normalised: motion [k, M] and audio features [k, A].
    self._previous_motion = np.zeros((0, sampler.motion_dim), np.float32)
    self._previous_audio = np.zeros((0, sampler.audio_dim), np.float32)
    # Normalised features [p < W, A] of the frames whose window is not complete yet.
    self._pending_audio = np.zeros((0, sampler.audio_dim), np.float32)
    self.num_windows = 0  # windows generated so far (the next one's noise index)
    self.num_frames = 0  # frames generated so far

  def push(self, audio_features: np.ndarray) -> np.ndarray:
    """Motion [n, M] (denormalised, through the pose control; n a multiple of W, may be 0) of the
    windows that the next frames' audio features [c, A] complete."""
    sampler = self.sampler
    audio_features = np.asarray(audio_features, np.float32)
    if audio_features.ndim != 2 or audio_features.shape[1] != sampler.audio_dim:
      raise ValueError(f"audio features must be [c, {sampler.audio_dim}], got shape "
                       f"{audio_features.shape}")
    self._pending_audio = np.concatenate(
        [self._pending_audio, sampler.statistics["audio_features"].normalize(audio_features)])
    motion = [np.zeros((0, sampler.motion_dim), np.float32)]
    while len(self._pending_audio) >= sampler.window:
      motion.append(self._window(self._pending_audio[:sampler.window]))
      self._pending_audio = self._pending_audio[sampler.window:]
    return np.concatenate(motion)

  def finish(self) -> np.ndarray:
    """Motion [p < W, M] of the frames left at the end of the audio (the last, shorter window)."""
    if not len(self._pending_audio):
      return np.zeros((0, self.sampler.motion_dim), np.float32)
    motion = self._window(self._pending_audio)
    self._pending_audio = self._pending_audio[:0]
    return motion

  def _window(self, audio: np.ndarray) -> np.ndarray:
    """One window call: motion [c, M] for normalised audio features [c <= W, A]."""
    sampler = self.sampler
    count = len(audio)
    padded_audio = np.zeros((sampler.window, sampler.audio_dim), np.float32)  # [W, A]
    padded_audio[:count] = audio
    has_previous = len(self._previous_motion) == sampler.num_previous
    previous_motion = np.zeros((sampler.num_previous, sampler.motion_dim), np.float32)
    previous_audio = np.zeros((sampler.num_previous, sampler.audio_dim), np.float32)
    if has_previous:
      previous_motion, previous_audio = self._previous_motion, self._previous_audio
    conditions = {"previous_motion": previous_motion[None], "previous_audio": previous_audio[None],
                  "audio": padded_audio[None], **self._controls}
    drops = {"drop_previous": np.array([not has_previous]),
             "audio_valid": (np.arange(sampler.window) < count)[None], **self._dropped}
    rng = jax.random.fold_in(self._key, self.num_windows)
    motion = np.asarray(sampler.sample_window(conditions, drops, rng, *self._lambdas,
                                               self._num_steps))[0, :count]
    self._previous_motion = np.concatenate([self._previous_motion, motion])[
        -sampler.num_previous:]
    self._previous_audio = np.concatenate([self._previous_audio, audio])[-sampler.num_previous:]
    self.num_windows += 1
    self.num_frames += count
    motion = sampler.statistics["motion"].denormalize(motion).astype(np.float32)
    if self._pose_control is not None:
      motion = self._pose_control(motion, self.num_frames - count)
    return motion
