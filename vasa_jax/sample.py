r"""Photo + speech -> talking-face video with the trained stage-1 and stage-2 models (VASA-1).

  python -m vasa_jax.sample --image=face.jpg --audio=speech.wav \
      --latent_checkpoint=/tmp/latent_tiny --motion_checkpoint=/tmp/motion_tiny \
      --output=/tmp/talking.mp4 [--gaze=THETA,PHI] [--distance=D] [--emotion=E1,E2,...] \
      [--cfg_audio=0.5] [--cfg_gaze=1.0] [--steps=50] [--seed=0] [--batch_size=8] \
      [--wav2vec2_dir=DIR] [--stream [--chunk_frames=N]]

1. Both checkpoints are restored (EMA weights, checked against the models their configs build;
   the motion frame must be [z_pose (7), z_dyn] of this latent model).
2. The photo's face is found and cropped as data preparation crops video frames: the dlib
   tracker's square crop box (`data_prep.face_tracker`, FFHQ framing) resampled to 512 px, then
   resized (bicubic) to the latent model's image size as stored training frames are
   (`input_pipeline.decode_frame`). No face, or several, is an error.
3. V_app and z_id are encoded once from the crop.
4. The speech (any format PyAV reads, resampled to 16 kHz mono) gives one feature frame per
   video frame (`vasa_jax.speech_features`, as in `data_prep.extract_motion`), the diffusion
   sampler turns them into motion (`vasa_jax.sampler`), and the decoder renders each motion
   frame in fixed-size batches.
5. The frames are written as H.264 at the motion config's fps with the input audio muxed in as
   AAC: round(audio seconds x fps) frames, so the video and audio durations agree within a frame.

Controls: --gaze (theta, phi) in degrees and --distance (1.0 = the reference face size) are the
clip-level gaze_main / distance_main of the stage-2 data; --emotion has the model's emotion_dim
values. A control left out is dropped (the model samples it). --cfg_audio and --cfg_gaze are the
classifier-free guidance scales (defaults from the motion config).

--stream produces the same video through the streaming path: audio is fed in chunks of
--chunk_frames video frames (default: the window W) as if it arrived live, features, motion and
frames are made as each chunk arrives, and the first-frame latency (first chunk handed over ->
first decoded frame, compilation done beforehand) and the sustained frame rate are printed.

Expected problems (missing or unreadable files, no face, silent audio, unusable checkpoints)
exit with status 1 and a one-line message.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional, Sequence

import av
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from flax import linen as nn
from PIL import Image, ImageOps

from configs import motion as motion_config_lib
from data_prep import face_tracker
from data_prep import media
from vasa_jax import sampler as sampler_lib
from vasa_jax import speech_features
from vasa_jax.models import audio as audio_lib
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import motion_dit
from vasa_jax.training import checkpoint as checkpoint_lib

# Audio whose RMS level is below this is silent (data preparation's default threshold).
SILENCE_DBFS = -50.0
# Streaming speech features: seconds of audio past a frame's centre that its features need
# (log-mel: half its shortest, 25 ms, analysis window; Wav2Vec2: a little future context for its
# attention), and seconds of earlier audio each feature call sees.
STREAM_LOOKAHEAD_SECONDS = {"log_mel": 0.0125, "wav2vec2": 0.1}
STREAM_CONTEXT_SECONDS = {"log_mel": 0.1, "wav2vec2": 2.0}
# Containers `media.write_video` writes (H.264 + AAC).
VIDEO_EXTENSIONS = (".mp4", ".mov")


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


class TalkingHead:
  """The trained stages, ready to animate faces: speech features, motion sampler, autoencoder.

  latent_checkpoint, motion_checkpoint: the --workdir of a stage-1 and a stage-2 run;
  wav2vec2_dir: overrides the motion config's `audio.wav2vec2_dir`; num_steps: denoising steps
  (default: the config's); batch_size: frames per decoder call (the last batch is padded).
  """

  def __init__(self, latent_checkpoint: str, motion_checkpoint: str, *,
               wav2vec2_dir: Optional[str] = None, num_steps: Optional[int] = None,
               batch_size: int = 8):
    if batch_size < 1:
      raise SampleError(f"the decoder batch size must be at least 1, got {batch_size}")
    latent_config, latent_params = load_latent(latent_checkpoint)
    motion_config, motion_params, statistics = load_motion(motion_checkpoint)
    if num_steps is not None and not 1 <= num_steps <= motion_config.diffusion.num_steps:
      raise SampleError(f"the denoising steps must be in [1, {motion_config.diffusion.num_steps}]"
                        f" (the training steps), got {num_steps}")
    expected_motion_dim = motion_config_lib.POSE_DIM + latent_config.model.dyn_dim
    if motion_config.model.motion_dim != expected_motion_dim:
      raise checkpoint_lib.CheckpointError(
          f"the motion model {motion_checkpoint!r} makes frames of {motion_config.model.motion_dim}"
          f" values but the latent model {latent_checkpoint!r} needs {expected_motion_dim} "
          f"(z_pose {motion_config_lib.POSE_DIM} + z_dyn {latent_config.model.dyn_dim})")
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
    self.image_size = int(latent_config.model.image_size)  # S
    self.batch_size = batch_size
    model = autoencoder_lib.FaceAutoencoder.from_config(latent_config.model)
    self._params = jax.device_put(latent_params)

    def encode(params, image):  # uint8 [1, S, S, 3] -> (V_app [1, D, h, w, C], z_id [1, I])
      pixels = image.astype(jnp.float32) / 127.5 - 1.0  # the range stage 1 trained on
      return model.apply({"params": params}, pixels, method=model.encode_appearance)

    def decode(params, volume, z_id, motion):  # motion [B, M] -> uint8 [B, S, S, 3]
      batch = motion.shape[0]
      images = model.apply(
          {"params": params}, jnp.broadcast_to(volume, (batch,) + volume.shape[1:]),
          jnp.broadcast_to(z_id, (batch,) + z_id.shape[1:]),
          motion[:, :motion_config_lib.POSE_DIM], motion[:, motion_config_lib.POSE_DIM:],
          method=model.decode)  # [B, S, S, 3] in [-1, 1]
      return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

    self._encode = jax.jit(encode)
    self._decode = jax.jit(decode)

  def encode(self, face: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """A face crop uint8 [s, s, 3] (`crop_face`) -> (V_app, z_id), each with a batch axis of 1.

    The crop is resized (bicubic) to the model's image size S, as training frames stored at
    another size are (`input_pipeline.decode_frame`).
    """
    crop = Image.fromarray(np.asarray(face, np.uint8))
    if crop.size != (self.image_size, self.image_size):
      crop = crop.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
    return self._encode(self._params, np.asarray(crop)[None])

  def render(self, appearance: tuple[jax.Array, jax.Array], motion: np.ndarray,
             progress: bool = False) -> Iterator[np.ndarray]:
    """Frames uint8 [b, S, S, 3], batch after batch, of motion [T, M] on `appearance`."""
    motion = np.asarray(motion, np.float32)
    starts = range(0, len(motion), self.batch_size)
    pending = None  # the previous batch, fetched once the next one is dispatched
    for start in tqdm.tqdm(starts, desc="frames", unit="batch", disable=not progress):
      batch = motion[start:start + self.batch_size]
      padded = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - len(batch), 0)])
      frames = self._decode(self._params, *appearance, padded)
      if pending is not None:
        yield np.asarray(pending[0])[:pending[1]]
      pending = (frames, len(batch))
    if pending is not None:
      yield np.asarray(pending[0])[:pending[1]]

  def warm_up(self, appearance: tuple[jax.Array, jax.Array]) -> None:
    """Compiles the window and decoder functions (before a latency measurement)."""
    self.sampler.start_stream().push(np.zeros((1, self.sampler.audio_dim), np.float32))
    for _ in self.render(appearance, np.zeros((1, self.sampler.motion_dim), np.float32)):
      pass


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


# ----------------------------------------------------------------------------------------------
# Streaming.
# ----------------------------------------------------------------------------------------------
class StreamingFeatures:
  """Speech features of audio that arrives in chunks, one frame as soon as its audio is in.

  A frame is emitted once its own audio and `lookahead_seconds` past its centre have arrived;
  each call computes the new frames from a segment starting `context_seconds` before them
  (log-mel frames equal the offline features; Wav2Vec2's only approximate them, as its attention
  and normalisation see the segment, not the whole recording, and each new segment length
  compiles its forward once). Over a stream, `push` and `finish` emit
  `audio.num_video_frames(total samples)` frames, as many as the offline features.
  """

  def __init__(self, featurizer: speech_features.SpeechFeaturizer,
               lookahead_seconds: Optional[float] = None,
               context_seconds: Optional[float] = None):
    self.featurizer = featurizer
    self.hop = audio_lib.SAMPLE_RATE / featurizer.fps  # samples per video frame
    lookahead = STREAM_LOOKAHEAD_SECONDS[featurizer.kind] if lookahead_seconds is None else (
        lookahead_seconds)
    context = STREAM_CONTEXT_SECONDS[featurizer.kind] if context_seconds is None else (
        context_seconds)
    self.lookahead_samples = max(0.0, lookahead * audio_lib.SAMPLE_RATE - 0.5 * self.hop)
    self.context_frames = math.ceil(context * featurizer.fps)
    self._samples = np.zeros(0, np.float32)  # received audio from sample `_offset` on
    self._offset = 0
    self.num_samples = 0  # samples received
    self.num_frames = 0  # frames emitted

  def push(self, samples: np.ndarray) -> np.ndarray:
    """Features [n, A] of the frames this chunk of 16 kHz samples [c] completes (n may be 0)."""
    self._samples = np.concatenate([self._samples, np.asarray(samples, np.float32)])
    self.num_samples += len(samples)
    return self._emit(max(0, math.floor((self.num_samples - self.lookahead_samples) / self.hop)))

  def finish(self) -> np.ndarray:
    """Features [n, A] of the remaining frames, at the end of the audio."""
    return self._emit(audio_lib.num_video_frames(self.num_samples, self.featurizer.fps))

  def _emit(self, ready: int) -> np.ndarray:
    if ready <= self.num_frames:
      return np.zeros((0, self.featurizer.dim), np.float32)
    first = max(0, self.num_frames - self.context_frames)  # first frame of the segment
    start = math.floor(first * self.hop)
    features = self.featurizer(self._samples[start - self._offset:])  # [frames - first, A]
    emitted = features[self.num_frames - first:ready - first]
    self.num_frames = ready
    keep_from = math.floor(max(0, ready - self.context_frames) * self.hop)
    self._samples = self._samples[keep_from - self._offset:]
    self._offset = keep_from
    return emitted


def audio_chunks(waveform: np.ndarray, chunk_frames: int, fps: float) -> Iterator[np.ndarray]:
  """The waveform in chunks of `chunk_frames` video frames' worth of samples (as if live)."""
  size = max(1, round(chunk_frames * audio_lib.SAMPLE_RATE / fps))
  for start in range(0, len(waveform), size):
    yield waveform[start:start + size]


def stream_frames(head: TalkingHead, appearance: tuple[jax.Array, jax.Array],
                  chunks: Iterable[np.ndarray], **controls) -> Iterator[np.ndarray]:
  """Video frames uint8 [S, S, 3], one by one, as 16 kHz audio chunks [c] arrive.

  appearance: `head.encode(face)`; controls: gaze, distance, emotion, seed, lambda_audio,
  lambda_gaze of `MotionSampler.start_stream`.
  """
  features = StreamingFeatures(head.featurizer)

  def feature_chunks():
    for chunk in chunks:
      yield features.push(chunk)
    yield features.finish()

  for motion in head.sampler.stream(feature_chunks(), **controls):
    for batch in head.render(appearance, motion):
      yield from batch


# ----------------------------------------------------------------------------------------------
# Videos.
# ----------------------------------------------------------------------------------------------
def render_video(head: TalkingHead, face: np.ndarray, waveform: np.ndarray, output_path: str, *,
                 stream: bool = False, chunk_frames: Optional[int] = None,
                 progress: bool = True, **controls) -> dict[str, float]:
  """Animates a face crop (`crop_face`) with speech [N] and writes the mp4; returns figures
  (frames, seconds, and for `stream` the first-frame latency and sustained frame rate)."""
  num_frames = audio_lib.num_video_frames(len(waveform), head.fps)
  if num_frames < 1:
    raise SampleError(f"the audio is shorter than one video frame ({len(waveform)} samples at "
                      f"{audio_lib.SAMPLE_RATE} Hz)")
  appearance = head.encode(face)
  report = {"frames": num_frames, "seconds": len(waveform) / audio_lib.SAMPLE_RATE}
  if stream:
    head.warm_up(appearance)
    chunk_frames = chunk_frames or head.sampler.window
    frames, first_time = [], None
    start_time = time.perf_counter()
    for frame in tqdm.tqdm(stream_frames(head, appearance,
                                         audio_chunks(waveform, chunk_frames, head.fps),
                                         **controls),
                           total=num_frames, desc="stream", unit="frame", disable=not progress):
      first_time = first_time or time.perf_counter()
      frames.append(frame)
    end_time = time.perf_counter()
    report.update(first_frame_latency_s=first_time - start_time, chunk_seconds=chunk_frames /
                  head.fps, sustained_fps=(len(frames) - 1) / max(end_time - first_time, 1e-9))
  else:
    motion = head.sampler.generate(head.featurizer(waveform), progress=progress, **controls)
    frames = [frame for batch in head.render(appearance, motion, progress) for frame in batch]
  if len(frames) != num_frames:
    raise AssertionError(f"made {len(frames)} frames for {num_frames} frames of audio")
  try:
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    media.write_video(output_path, np.stack(frames), head.fps, audio=waveform,
                      sample_rate=audio_lib.SAMPLE_RATE)
  except (OSError, av.FFmpegError) as error:
    raise SampleError(f"cannot write {output_path!r}: {error}") from error
  return report


def generate_video(head: TalkingHead, image_path: str, audio_path: str, output_path: str,
                   **options) -> dict[str, float]:
  """Photo file + speech file -> mp4 at `output_path`; `options` as for `render_video`."""
  face = crop_face(read_photo(image_path), f"image {image_path!r}")
  return render_video(head, face, read_speech(audio_path), output_path, **options)


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
def _floats(count: Optional[int]):
  def parse(text: str) -> list[float]:
    try:
      values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError as error:
      raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from (
          error)
    if count is not None and len(values) != count:
      raise argparse.ArgumentTypeError(f"{text!r} must have {count} values")
    return values
  return parse


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m vasa_jax.sample", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--image", required=True, help="photo with one face")
  parser.add_argument("--audio", required=True, help="speech (any format PyAV reads)")
  parser.add_argument("--latent_checkpoint", required=True, help="stage-1 run's --workdir")
  parser.add_argument("--motion_checkpoint", required=True, help="stage-2 run's --workdir")
  parser.add_argument("--output", required=True, help="the mp4 to write")
  parser.add_argument("--gaze", type=_floats(2), help="theta,phi in degrees (default: dropped)")
  parser.add_argument("--distance", type=float, help="head distance (default: dropped)")
  parser.add_argument("--emotion", type=_floats(None), help="comma list (default: dropped)")
  parser.add_argument("--cfg_audio", type=float, help="audio guidance scale (config default)")
  parser.add_argument("--cfg_gaze", type=float, help="gaze guidance scale (config default)")
  parser.add_argument("--steps", type=int, help="denoising steps (config default)")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")
  parser.add_argument("--batch_size", type=int, default=8, help="frames per decoder call")
  parser.add_argument("--wav2vec2_dir", help="overrides the motion config's audio.wav2vec2_dir")
  parser.add_argument("--stream", action="store_true", help="go through the streaming path")
  parser.add_argument("--chunk_frames", type=int, help="--stream chunk length (default: W)")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if os.path.splitext(args.output)[1].lower() not in VIDEO_EXTENSIONS:
      raise SampleError(f"--output {args.output!r} must end in one of {VIDEO_EXTENSIONS}")
    # The inputs are checked before the models load.
    face = crop_face(read_photo(args.image), f"image {args.image!r}")
    waveform = read_speech(args.audio)
    head = TalkingHead(args.latent_checkpoint, args.motion_checkpoint,
                       wav2vec2_dir=args.wav2vec2_dir, num_steps=args.steps,
                       batch_size=args.batch_size)
    if args.emotion is not None and len(args.emotion) != head.sampler.emotion_dim:
      raise SampleError(f"--emotion has {len(args.emotion)} values, the motion model takes "
                        f"{head.sampler.emotion_dim}")
    if args.chunk_frames is not None and args.chunk_frames < 1:
      raise SampleError(f"--chunk_frames must be at least 1, got {args.chunk_frames}")
    report = render_video(
        head, face, waveform, args.output, stream=args.stream, chunk_frames=args.chunk_frames,
        gaze=args.gaze, distance=args.distance, emotion=args.emotion, seed=args.seed,
        lambda_audio=args.cfg_audio, lambda_gaze=args.cfg_gaze)
  except (SampleError, checkpoint_lib.CheckpointError, media.MediaError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"wrote {args.output}: {report['frames']} frames at {head.fps:g} fps "
        f"({report['seconds']:.2f} s of audio)")
  if args.stream:
    print(f"first-frame latency: {1000 * report['first_frame_latency_s']:.1f} ms after the first "
          f"audio chunk ({report['chunk_seconds']:.2f} s of audio per chunk)")
    print(f"sustained: {report['sustained_fps']:.1f} frames/s "
          f"({report['sustained_fps'] / head.fps:.2f}x real time)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
