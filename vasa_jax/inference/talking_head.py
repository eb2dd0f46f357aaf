"""The trained stages as one object that animates a face: checkpoints, inputs, videos.

`TalkingHead(latent_checkpoint, motion_checkpoint)` restores both runs (EMA weights, checked
against the models their configs build) and holds the speech featurizer, the motion sampler and
a `FaceRenderer` (the jitted encoder and decoder of stage 1, which stage 2's evaluator also
renders with). `crop_face(read_photo(path))` crops a photo as data preparation
crops video frames; `read_speech(path)` reads speech as 16 kHz mono; `track_driving_video` crops
the face of a driving video (`--pose_from`); `render_video` writes the mp4 (offline, or through
`streaming` with `stream=True`) and optionally the motion (`save_motion`). Used by `python -m vasa_jax.sample`,
`python -m vasa_jax.demo` and `python -m vasa_jax.app`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Iterator, Optional

import av
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from flax import linen as nn
from PIL import Image, ImageOps

from vasa_jax.data import face_tracker
from vasa_jax.data import media
from vasa_jax.data import motion_records
from vasa_jax.data import speech_features
from vasa_jax.inference import pose_control as pose_control_lib
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.inference import streaming
from vasa_jax.models import audio as audio_lib
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import motion_dit
from vasa_jax.training import checkpoint as checkpoint_lib
from vasa_jax.training import run_metrics

# Audio whose RMS level is below this is silent (data preparation's default threshold).
SILENCE_DBFS = -50.0


class SampleError(ValueError):
  """An input cannot be animated (missing or unreadable file, no face, silent audio, bad flag)."""


# ----------------------------------------------------------------------------------------------
# Checkpoints and models.
# ----------------------------------------------------------------------------------------------
def _state_entry(state: dict, key: str, workdir: str, step: int) -> Any:
  if key not in state:
    raise checkpoint_lib.CheckpointError(
        f"{workdir!r} step {step} holds no {key!r} (it has {sorted(state)})")
  return state[key]


def load_latent(workdir: str) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, EMA FaceAutoencoder params) of a stage-1 run; CheckpointError names problems."""
  config, state, step = checkpoint_lib.restore_for_inference(workdir, "latent")
  params = _state_entry(state, "ema_generator", workdir, step)
  abstract = nn.meta.unbox(autoencoder_lib.abstract_variables(config.model)["params"])
  checkpoint_lib.check_param_shapes(params, abstract,
                                    f"the EMA generator of {workdir!r} step {step}")
  return config, params


def load_motion(workdir: str) -> tuple[ml_collections.ConfigDict, Any, dict]:
  """(config, EMA MotionDiT params, statistics) of a stage-2 run; CheckpointError names
  problems."""
  config, state, step = checkpoint_lib.restore_for_inference(workdir, "motion")
  params = _state_entry(state, "ema_params", workdir, step)
  statistics = _state_entry(state, "statistics", workdir, step)
  model = motion_dit.MotionDiT.from_config(config.model)
  checkpoint_lib.check_param_shapes(
      params, nn.meta.unbox(motion_dit.abstract_variables(model)["params"]),
      f"the EMA MotionDiT of {workdir!r} step {step}")
  for name, shape in sampler_lib.statistics_shapes(config.model).items():
    for part in ("mean", "std"):
      value = statistics.get(name, {}).get(part)
      if value is None:
        raise checkpoint_lib.CheckpointError(
            f"the statistics of {workdir!r} step {step} lack {name}/{part}")
      if np.shape(value) != shape:
        raise checkpoint_lib.CheckpointError(
            f"the statistics of {workdir!r} step {step} have {name}/{part} of shape "
            f"{np.shape(value)}, the model needs {shape}")
  return config, params, statistics


def check_num_steps(num_steps: Optional[int], num_train_steps: int) -> None:
  """SampleError unless `num_steps` (None: the config's) is in [1, num_train_steps]."""
  if num_steps is not None and not 1 <= num_steps <= num_train_steps:
    raise SampleError(f"the denoising steps must be in [1, {num_train_steps}] (the training "
                      f"steps), got {num_steps}")


def undertrained_warning(latent_checkpoint: str, motion_checkpoint: str) -> Optional[str]:
  """One line saying which of the two runs' newest checkpoints is clearly undertrained by its
  own recorded metrics (`run_metrics.undertrained_reasons`), or None."""
  parts = []
  for stage, workdir in (("stage-1", latent_checkpoint), ("stage-2", motion_checkpoint)):
    step = checkpoint_lib.latest_step(workdir) if os.path.isdir(workdir) else None
    reasons = run_metrics.undertrained_reasons(workdir, step) if step is not None else []
    if reasons:
      parts.append(f"the {stage} checkpoint {workdir!r} (step {step}) looks undertrained: "
                   + "; ".join(reasons))
  if not parts:
    return None
  return ("warning: " + "; ".join(parts) + " - expect a video without a clear face or lip "
          "motion; train longer (docs/training.md)")


def decoder_batch(count: int, batch_size: int) -> int:
  """Frames a decoder call runs for a batch of `count` <= batch_size frames: the next power of two,
  at most `batch_size` (a stream's W-frame windows waste little on their last batch, and at most
  log2(batch_size) + 1 shapes compile)."""
  return min(batch_size, 1 << max(0, count - 1).bit_length())


class FaceRenderer:
  """A stage-1 run's EMA autoencoder as a renderer: a face crop -> its appearance (V_app, z_id)
  once; motion frames [z_pose, z_dyn] -> images, in fixed-size jitted decoder batches.

  latent_checkpoint: the --workdir of a stage-1 run; batch_size: frames per decoder call (a
  last, shorter batch is padded to `decoder_batch` frames).
  """

  def __init__(self, latent_checkpoint: str, batch_size: int = 8):
    if batch_size < 1:
      raise SampleError(f"the decoder batch size must be at least 1, got {batch_size}")
    self.config, latent_params = load_latent(latent_checkpoint)
    self.image_size = int(self.config.model.image_size)  # S
    self.dyn_dim = int(self.config.model.dyn_dim)
    self.batch_size = batch_size
    model = autoencoder_lib.FaceAutoencoder.from_config(self.config.model)
    self._params = jax.device_put(latent_params)

    def encode(params, image):  # uint8 [1, S, S, 3] -> (V_app [1, D, h, w, C], z_id [1, I])
      pixels = image.astype(jnp.float32) / 127.5 - 1.0  # the range stage 1 trained on
      return model.apply({"params": params}, pixels, method=model.encode_appearance)

    def decode(params, volume, z_id, motion):  # motion [B, M] -> uint8 [B, S, S, 3]
      batch = motion.shape[0]
      images = model.apply(
          {"params": params}, jnp.broadcast_to(volume, (batch,) + volume.shape[1:]),
          jnp.broadcast_to(z_id, (batch,) + z_id.shape[1:]),
          motion[:, :motion_records.POSE_DIM], motion[:, motion_records.POSE_DIM:],
          method=model.decode)  # [B, S, S, 3] in [-1, 1]
      return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

    def encode_motion(params, images):  # uint8 [B, S, S, 3] -> [B, M] = [z_pose, z_dyn]
      pixels = images.astype(jnp.float32) / 127.5 - 1.0
      z_pose, z_dyn = model.apply({"params": params}, pixels, method=model.encode_motion)
      return jnp.concatenate([z_pose, z_dyn], axis=-1).astype(jnp.float32)

    self._encode = jax.jit(encode)
    self._decode = jax.jit(decode)
    self._encode_motion = jax.jit(encode_motion)

  def model_input(self, face: np.ndarray) -> np.ndarray:
    """A face crop uint8 [s, s, 3] (`crop_face`) as the model sees it: uint8 [S, S, 3], resized
    (bicubic) to the model's image size S as training frames stored at another size are
    (`input_pipeline.decode_frame`)."""
    crop = Image.fromarray(np.asarray(face, np.uint8))
    if crop.size != (self.image_size, self.image_size):
      crop = crop.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
    return np.asarray(crop)

  def encode(self, face: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """A face crop uint8 [s, s, 3] (`crop_face`) -> (V_app, z_id), each with a batch axis of 1,
    encoded from `model_input(face)`."""
    return self._encode(self._params, self.model_input(face)[None])

  def encode_motion(self, faces: np.ndarray) -> np.ndarray:
    """Face crops uint8 [T, s, s, 3] (`crop_face`, `track_driving_video`) -> their motion [T, M]
    = [z_pose, z_dyn] from the stage-1 motion encoder (on `model_input` of each crop, in
    fixed-size batches, the last one padded)."""
    motion = []
    for start in range(0, len(faces), self.batch_size):
      batch = np.stack([self.model_input(face) for face in faces[start:start + self.batch_size]])
      padded = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - len(batch), 0)])
      motion.append(np.asarray(self._encode_motion(self._params, padded))[:len(batch)])
    return np.concatenate(motion)

  def render(self, appearance: tuple[jax.Array, jax.Array], motion: np.ndarray,
             progress: bool = False) -> Iterator[np.ndarray]:
    """Frames uint8 [b, S, S, 3], batch after batch, of motion [T, M] on `appearance`: batches of
    `batch_size` frames, the last one padded to `decoder_batch` frames."""
    motion = np.asarray(motion, np.float32)
    starts = range(0, len(motion), self.batch_size)
    pending = None  # the previous batch, fetched once the next one is dispatched
    for start in tqdm.tqdm(starts, desc="frames", unit="batch", disable=not progress):
      batch = motion[start:start + self.batch_size]
      size = decoder_batch(len(batch), self.batch_size)
      padded = np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), 0)])
      frames = self._decode(self._params, *appearance, padded)
      if pending is not None:
        yield np.asarray(pending[0])[:pending[1]]
      pending = (frames, len(batch))
    if pending is not None:
      yield np.asarray(pending[0])[:pending[1]]


class TalkingHead:
  """The trained stages, ready to animate faces: speech features, motion sampler, autoencoder.

  latent_checkpoint, motion_checkpoint: the --workdir of a stage-1 and a stage-2 run;
  wav2vec2_dir: overrides the motion config's `audio.wav2vec2_dir`; num_steps: denoising steps
  (default: the config's); batch_size: frames per decoder call (the last batch is padded).
  """

  def __init__(self, latent_checkpoint: str, motion_checkpoint: str, *,
               wav2vec2_dir: Optional[str] = None, num_steps: Optional[int] = None,
               batch_size: int = 8):
    self.renderer = FaceRenderer(latent_checkpoint, batch_size)
    motion_config, motion_params, statistics = load_motion(motion_checkpoint)
    check_num_steps(num_steps, motion_config.diffusion.num_steps)
    expected_motion_dim = motion_records.POSE_DIM + self.renderer.dyn_dim
    if motion_config.model.motion_dim != expected_motion_dim:
      raise checkpoint_lib.CheckpointError(
          f"the motion model {motion_checkpoint!r} makes frames of {motion_config.model.motion_dim}"
          f" values but the latent model {latent_checkpoint!r} needs {expected_motion_dim} "
          f"(z_pose {motion_records.POSE_DIM} + z_dyn {self.renderer.dyn_dim})")
    if wav2vec2_dir:
      motion_config.audio.wav2vec2_dir = wav2vec2_dir
    try:
      self.featurizer = speech_features.from_config(motion_config.audio, motion_config.fps)
    except (OSError, ValueError) as error:
      raise SampleError(f"cannot build the speech features: {error}") from error
    if self.featurizer.dim != motion_config.model.audio_dim:
      raise SampleError(f"the speech features have {self.featurizer.dim} values per frame, the "
                        f"motion model expects {motion_config.model.audio_dim}")
    self.sampler = sampler_lib.MotionSampler(motion_config, motion_params, statistics,
                                             num_steps=num_steps)
    self.fps = float(motion_config.fps)  # video frame rate
    self.image_size = self.renderer.image_size  # S
    self.batch_size = batch_size

  def model_input(self, face: np.ndarray) -> np.ndarray:
    """`FaceRenderer.model_input`."""
    return self.renderer.model_input(face)

  def encode(self, face: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """`FaceRenderer.encode`."""
    return self.renderer.encode(face)

  def encode_motion(self, faces: np.ndarray) -> np.ndarray:
    """`FaceRenderer.encode_motion`."""
    return self.renderer.encode_motion(faces)

  def render(self, appearance: tuple[jax.Array, jax.Array], motion: np.ndarray,
             progress: bool = False) -> Iterator[np.ndarray]:
    """`FaceRenderer.render`."""
    return self.renderer.render(appearance, motion, progress)

  def warm_up(self, appearance: tuple[jax.Array, jax.Array],
              num_steps: Optional[int] = None) -> None:
    """Compiles the window function for `num_steps` denoising steps (None: the sampler's) and
    the decoder function for each of its batch shapes (before a latency measurement)."""
    motion_stream = self.sampler.start_stream(num_steps=num_steps)
    motion_stream.push(np.zeros((1, self.sampler.audio_dim), np.float32))
    motion_stream.finish()
    size = 1
    while size <= self.batch_size:  # every `decoder_batch` shape
      for _ in self.render(appearance, np.zeros((size, self.sampler.motion_dim), np.float32)):
        pass
      size = min(2 * size, self.batch_size) if size < self.batch_size else size + 1


# ----------------------------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------------------------
def read_photo(path: str) -> np.ndarray:
  """A photo as uint8 [H, W, 3] RGB (EXIF orientation applied)."""
  if not os.path.isfile(path):
    raise SampleError(f"image {path!r} does not exist")
  try:
    with Image.open(path) as image:
      return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise SampleError(f"cannot read image {path!r}: {error}") from error


def crop_face(image: np.ndarray, source: str = "the photo") -> np.ndarray:
  """The face of `image` cropped as data preparation crops video frames: uint8 [512, 512, 3]
  (the tracker's default resolution, `data_prep.prepare`'s default --resolution)."""
  track = face_tracker.FaceTracker(face_tracker.TrackerConfig()).track_image(image)
  if track.skip_reason == "no_face":
    raise SampleError(f"no face found in {source}")
  if track.skip_reason == "multiple_faces":
    raise SampleError(f"several faces found in {source}: crop it to one person")
  if track.skip_reason is not None:
    raise SampleError(f"the face in {source} is unusable: {track.skip_reason}")
  return track.crops[0]


def read_speech(path: str) -> np.ndarray:
  """Speech as float32 [N] mono at 16 kHz; errors for missing, undecodable, empty (zero-length)
  or silent audio."""
  try:
    waveform = audio_lib.load_audio(path)
  except media.NoAudioError as error:
    raise SampleError(f"audio {path!r} is empty (no audio stream or zero-length audio): "
                      f"{error}") from error
  except media.MediaError as error:
    if not os.path.exists(path):
      raise SampleError(f"audio {path!r} does not exist") from error
    raise SampleError(f"cannot read audio {path!r}: {error}") from error
  if media.is_silent(waveform, SILENCE_DBFS):
    raise SampleError(f"audio {path!r} is silent (RMS {media.rms_dbfs(waveform):.1f} dBFS, "
                      f"below {SILENCE_DBFS:.0f} dBFS): there is no speech to animate")
  return waveform


def track_driving_video(path: str, fps: float) -> np.ndarray:
  """The face crops uint8 [T, 512, 512, 3] of a driving video (`--pose_from`), frames sampled at
  `fps` and tracked as data preparation tracks clips (the whole video: its crop smoothing sees
  every frame; without the size and sharpness checks); errors for a missing or unreadable video
  and for no face or several."""
  if not os.path.isfile(path):
    raise SampleError(f"driving video {path!r} does not exist")
  try:
    video = media.read_video(path, fps)
  except media.MediaError as error:
    raise SampleError(f"cannot read driving video {path!r}: {error}") from error
  if not len(video.frames):
    raise SampleError(f"driving video {path!r} has no frames")
  track = face_tracker.FaceTracker(face_tracker.TrackerConfig()).track_clip(
      video.frames, fps, check_quality=False)
  if track.skip_reason == "no_face":
    raise SampleError(f"no face found in driving video {path!r}")
  if track.skip_reason == "multiple_faces":
    raise SampleError(f"several faces found in driving video {path!r}: use a video of one person")
  if track.skip_reason is not None:
    raise SampleError(f"the face in driving video {path!r} is unusable: {track.skip_reason}")
  return track.crops


def save_motion(path: str, motion: np.ndarray, fps: float, controls: dict[str, Any]) -> None:
  """Writes the motion [T, M] of a video as an npz: z_pose [T, 7], z_dyn [T, M - 7], fps, and
  `controls` (the controls used, JSON) as a string."""
  motion = np.asarray(motion, np.float32)
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as file:
      np.savez(file, z_pose=motion[:, :motion_records.POSE_DIM],
               z_dyn=motion[:, motion_records.POSE_DIM:], fps=np.float32(fps),
               controls=np.array(json.dumps(controls, sort_keys=True,
                                            default=lambda value: np.asarray(value).tolist())))
  except OSError as error:
    raise SampleError(f"cannot write {path!r}: {error}") from error


# ----------------------------------------------------------------------------------------------
# Videos.
# ----------------------------------------------------------------------------------------------
def render_video(head: TalkingHead, face: np.ndarray, waveform: np.ndarray, output_path: str, *,
                 stream: bool = False, chunk_frames: Optional[int] = None,
                 progress: bool = True, output_scale: int = 1, head_motion: float = 1.0,
                 pose_from: Optional[str] = None, motion_path: Optional[str] = None,
                 **controls) -> dict[str, Any]:
  """Animates a face crop (`crop_face`) with speech [N] and writes the mp4; returns figures
  (frames, seconds, and for `stream` the first-frame latency and sustained frame rate).

  `controls`: gaze, distance, emotion, seed, lambda_audio, lambda_gaze, num_steps of
  `MotionSampler.start_stream`. head_motion: scales the head pose's deviation from the photo's own
  pose (0: still; `pose_control`); pose_from: a driving video whose head pose is shown instead
  of the generated one (`track_driving_video`); motion_path: where to save the motion with the
  controls used (`save_motion`; the driving video by its file name). The frames have the latent model's resolution S;
  `output_scale` > 1 upscales them (bicubic) to output_scale x S. Frames are decoded, upscaled
  and written batch by batch: memory does not grow with the length of the speech."""
  check_num_steps(controls.get("num_steps"), head.sampler.schedule.num_steps)
  if not (math.isfinite(float(head_motion)) and head_motion >= 0):
    raise SampleError(f"the head motion must be a number >= 0, got {head_motion}")
  if output_scale < 1:
    raise SampleError(f"the output scale must be at least 1, got {output_scale}")
  num_frames = audio_lib.num_video_frames(len(waveform), head.fps)
  if num_frames < 1:
    raise SampleError(f"the audio is shorter than one video frame ({len(waveform)} samples at "
                      f"{audio_lib.SAMPLE_RATE} Hz)")
  driving_pose = None
  if pose_from is not None:
    driving_pose = head.encode_motion(track_driving_video(pose_from, head.fps))[
        :, :motion_records.POSE_DIM]  # [T_d, 7]
  if head_motion != 1.0 or driving_pose is not None:
    reference_pose = head.encode_motion(face[None])[0, :motion_records.POSE_DIM]  # [7]
    controls["pose_control"] = pose_control_lib.PoseControl(reference_pose, head_motion,
                                                            driving_pose)
  appearance = head.encode(face)
  report = {"frames": num_frames, "seconds": len(waveform) / audio_lib.SAMPLE_RATE}
  motion_chunks = []  # [c, M] each, as shown

  def stream_motion():  # motion chunks [c, M], as the audio arrives
    chunks = streaming.audio_chunks(waveform, chunk_frames, head.fps)
    for motion in streaming.stream_motion(head, chunks, **controls):
      motion_chunks.append(motion)
      yield motion

  def frame_batches() -> Iterator[np.ndarray]:  # uint8 [b, S, S, 3]
    if stream:
      for motion in stream_motion():
        yield from head.render(appearance, motion)
    else:
      motion = head.sampler.generate(head.featurizer(waveform), progress=progress, **controls)
      motion_chunks.append(motion)
      yield from head.render(appearance, motion, progress)

  if stream:
    head.warm_up(appearance, controls.get("num_steps"))
    chunk_frames = chunk_frames or head.sampler.window
  bar = tqdm.tqdm(total=num_frames, desc="stream", unit="frame", disable=not (stream and progress))
  first_time, write_seconds = None, 0.0  # the timings leave out upscaling and writing
  try:
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with media.VideoWriter(output_path, head.fps, audio=waveform,
                           sample_rate=audio_lib.SAMPLE_RATE) as writer:
      start_time = time.perf_counter()
      for frames in frame_batches():
        made_time = time.perf_counter()
        first_time = first_time or made_time
        writer.write(upscale(frames, output_scale))
        bar.update(len(frames))
        write_seconds += time.perf_counter() - made_time
      end_time = time.perf_counter() - write_seconds
      if writer.num_frames != num_frames:
        raise AssertionError(f"made {writer.num_frames} frames for {num_frames} frames of audio")
  except (OSError, av.FFmpegError) as error:
    raise SampleError(f"cannot write {output_path!r}: {error}") from error
  finally:
    bar.close()
  if stream:
    report.update(first_frame_latency_s=first_time - start_time, chunk_seconds=chunk_frames /
                  head.fps, sustained_fps=(num_frames - 1) / max(end_time - first_time, 1e-9))
  if motion_path is not None:
    sampling = head.sampler.config.sampling
    used = {name: value for name, value in controls.items() if name != "pose_control"}
    used.update(  # the values in effect where the defaults were taken (None: dropped controls)
        num_steps=controls.get("num_steps") or head.sampler.num_steps,
        lambda_audio=_default(controls.get("lambda_audio"), sampling.lambda_audio),
        lambda_gaze=_default(controls.get("lambda_gaze"), sampling.lambda_gaze),
        seed=controls.get("seed", 0), head_motion=float(head_motion),
        pose_from=pose_from and os.path.basename(pose_from),
        stream=stream, chunk_frames=chunk_frames if stream else None)
    save_motion(motion_path, np.concatenate(motion_chunks), head.fps, used)
  return report


def _default(value: Any, default: Any) -> Any:
  return default if value is None else value


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
  """uint8 [T, S, S, 3] -> [T, scale * S, scale * S, 3] (bicubic); `scale` 1 returns `frames`."""
  if scale < 1:
    raise SampleError(f"the output scale must be at least 1, got {scale}")
  if scale == 1:
    return frames
  size = (frames.shape[2] * scale, frames.shape[1] * scale)
  return np.stack([np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))
                   for frame in frames])


def generate_video(head: TalkingHead, image_path: str, audio_path: str, output_path: str,
                   **options) -> dict[str, float]:
  """Photo file + speech file -> mp4 at `output_path`; `options` as for `render_video`."""
  face = crop_face(read_photo(image_path), f"image {image_path!r}")
  return render_video(head, face, read_speech(audio_path), output_path, **options)
