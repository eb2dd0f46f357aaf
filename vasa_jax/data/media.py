"""Video, audio and JPEG input/output with PyAV and Pillow, shared across the project.

Readers return numpy arrays on a fixed clock: `read_video` resamples frames to a target frame rate
by timestamp (the nearest source frame at t = k / fps), `read_audio` resamples to mono float32 at a
target sample rate. Writers produce H.264/AAC mp4 files (and m4a or wav audio) whose durations
match the arrays they were given. Files that cannot be read raise `MediaError`, whose message
names the file.

Timestamps: times are on the container's clock, counted from the container's start time (as
ffmpeg does; this drops e.g. an mp3's encoder delay). `read_video` returns the clock time of its
frame 0 (`VideoClip.start_time`); `read_audio(..., start_time=...)` returns audio whose sample 0 is
at that clock time, so audio from the same file lines up with frame 0.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from fractions import Fraction

import av
import numpy as np
from PIL import Image

# AAC in an mp4 container for these extensions, 16-bit PCM for .wav.
_AAC_EXTENSIONS = (".m4a", ".mp4", ".mov")
_WAV_EXTENSIONS = (".wav",)
# A stream that decodes to less than its declared length minus these margins is truncated.
_TRUNCATION_TOLERANCE_FRACTION = 0.05
_TRUNCATION_TOLERANCE_SECONDS = 0.1
# Slack for floating point comparisons of timestamps, in seconds.
_TIME_EPSILON = 1e-6


class MediaError(Exception):
  """A media file is missing, corrupt, truncated or lacks what was asked for."""


class NoAudioError(MediaError):
  """A media file has no audio stream, or its audio stream holds no samples."""


@dataclasses.dataclass(frozen=True)
class VideoClip:
  """Decoded video frames on a fixed clock.

  Attributes:
    frames: uint8 [T, H, W, 3] RGB; frame k shows the source at start_time + k / fps.
    fps: frame rate of `frames`.
    source_fps: the source video stream's own (average) frame rate.
    duration: the source video's length in seconds, from its first frame to the end of its last
      one (the container's declared length where `max_seconds` stopped decoding early).
    start_time: the container clock time of frame 0, in seconds.
  """
  frames: np.ndarray
  fps: float
  source_fps: float
  duration: float
  start_time: float


def _open_input(path: str) -> av.container.InputContainer:
  if not os.path.exists(path):
    raise MediaError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise MediaError(f"{path}: not a file")
  try:
    return av.open(path)
  except av.FFmpegError as e:
    raise MediaError(f"{path}: cannot open as a media file ({e})") from e


def _clock_origin(container: av.container.InputContainer) -> float:
  """The container's start time in seconds: the zero of the clock this module reports."""
  return container.start_time / av.time_base if container.start_time is not None else 0.0


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate is not None and rate > 0:
      return float(rate)
  return None


def _declared_duration(stream: av.stream.Stream) -> float | None:
  """The stream's length as its container declares it, if it does."""
  if stream.duration is None or stream.time_base is None:
    return None
  return float(stream.duration * stream.time_base)


def _check_complete(path: str, kind: str, decoded: float, declared: float | None) -> None:
  """Raises MediaError if a stream decoded to clearly less than the container declares."""
  if declared is not None and decoded < declared * (1 - _TRUNCATION_TOLERANCE_FRACTION) - (
      _TRUNCATION_TOLERANCE_SECONDS):
    raise MediaError(
        f"{path}: truncated: decoded {decoded:.2f} s of {kind}, the container declares "
        f"{declared:.2f} s")


def read_video(path: str, fps: float = 25.0, max_seconds: float | None = None) -> VideoClip:
  """Decodes a video's first video stream and resamples it to `fps` by timestamp.

  Output frame k is the source frame whose presentation time is nearest to k / fps (measured from
  the first frame; a tie goes to the later frame). Output frames cover the source's span:
  floor(duration * fps) frames.

  Args:
    path: any container PyAV reads.
    fps: the output frame rate.
    max_seconds: if given, decoding stops after floor(max_seconds * fps) output frames.

  Returns:
    The resampled clip.

  Raises:
    MediaError: the file is missing, undecodable, truncated or has no video frames.
  """
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  max_frames = None if max_seconds is None else math.floor(max_seconds * fps + _TIME_EPSILON)
  container = _open_input(path)
  try:
    if not container.streams.video:
      raise MediaError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    source_fps = _stream_fps(stream)
    origin = _clock_origin(container)
    output: list[np.ndarray] = []
    previous_image = previous_time = first_time = None
    size = None
    index = 0
    stopped_early = False
    for frame in container.decode(stream):
      clock_time = frame.time - origin if frame.time is not None else index / (source_fps or fps)
      index += 1
      if first_time is None:
        first_time = clock_time
        size = (frame.width, frame.height)
      time = clock_time - first_time
      image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
      if previous_image is not None:
        # Output times nearer to the previous frame than to this one show the previous frame.
        midpoint = 0.5 * (previous_time + time)
        while len(output) / fps < midpoint - _TIME_EPSILON:
          output.append(previous_image)
      previous_image, previous_time = image, time
      if max_frames is not None and len(output) >= max_frames:
        stopped_early = True
        break
    if previous_image is None:
      raise MediaError(f"{path}: video stream has no decodable frames")
    if source_fps is None:
      source_fps = (index - 1) / previous_time if previous_time > 0 else fps
    if stopped_early:
      del output[max_frames:]
      duration = _declared_duration(stream) or max_frames / fps
    else:
      duration = previous_time + 1.0 / source_fps
      _check_complete(path, "video", duration, _declared_duration(stream))
      num_frames = math.floor(duration * fps + _TIME_EPSILON)
      while len(output) < num_frames:
        output.append(previous_image)
      del output[num_frames:]
    if not output:
      raise MediaError(f"{path}: video is shorter than one frame at {fps} fps")
    return VideoClip(frames=np.stack(output), fps=float(fps), source_fps=float(source_fps),
                     duration=float(duration), start_time=float(first_time))
  except av.FFmpegError as e:
    raise MediaError(f"{path}: cannot decode video ({e})") from e
  finally:
    container.close()


def read_audio(path: str, sample_rate: int = 16_000, start_time: float = 0.0) -> np.ndarray:
  """Decodes a file's first audio stream to mono float32 at `sample_rate`.

  Args:
    path: any container/codec PyAV reads (mp4 with AAC, m4a, wav, mp3, ...), any rate and layout.
    sample_rate: the output sample rate.
    start_time: container clock time, in seconds, that sample 0 of the output corresponds to
      (audio before it is dropped; a gap after it is filled with zeros). Pass
      `VideoClip.start_time` to align audio with the frames of the same file.

  Returns:
    float32 [N] in [-1, 1], ending where the stream's last packet ends.

  Raises:
    NoAudioError: the file has no audio stream, or no audio samples after `start_time`.
    MediaError: the file is missing, undecodable or truncated.
  """
  container = _open_input(path)
  try:
    if not container.streams.audio:
      raise NoAudioError(f"{path}: has no audio stream")
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    origin = _clock_origin(container)
    chunks: list[np.ndarray] = []
    first_time = None
    end_time = None
    for packet in container.demux(stream):
      if packet.pts is not None and packet.duration and packet.time_base is not None:
        packet_end = float((packet.pts + packet.duration) * packet.time_base) - origin
        end_time = packet_end if end_time is None else max(end_time, packet_end)
      for frame in packet.decode():
        if first_time is None:
          first_time = frame.time - origin if frame.time is not None else 0.0
        chunks.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
    chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    if first_time is not None and end_time is not None:
      _check_complete(path, "audio", end_time - first_time, _declared_duration(stream))
  except av.FFmpegError as e:
    raise MediaError(f"{path}: cannot decode audio ({e})") from e
  finally:
    container.close()
  audio = np.concatenate(chunks) if chunks else np.zeros([0], np.float32)
  if first_time is not None:
    offset = round((first_time - start_time) * sample_rate)
    audio = np.concatenate([np.zeros([offset], np.float32), audio]) if offset > 0 else (
        audio[-offset:])
  if end_time is not None:
    audio = audio[:max(0, round((end_time - start_time) * sample_rate))]
  if audio.size == 0:
    raise NoAudioError(f"{path}: audio stream holds no samples after {start_time:.3f} s")
  return np.clip(audio, -1.0, 1.0).astype(np.float32)


def rms_dbfs(audio: np.ndarray) -> float:
  """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
  if audio.size == 0:
    return -math.inf
  rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
  return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def is_silent(audio: np.ndarray, threshold_dbfs: float = -50.0) -> bool:
  """Whether float audio in [-1, 1] has an RMS level below `threshold_dbfs`."""
  return rms_dbfs(audio) < threshold_dbfs


def speech_envelope(audio: np.ndarray, num_frames: int, fps: float,
                    sample_rate: int = 16_000) -> np.ndarray:
  """RMS of float audio [N] in a one-frame window centred on each video frame's time:
  float32 [num_frames] (zero padding past the ends)."""
  samples = np.asarray(audio, np.float64)
  half = int(round(sample_rate / fps / 2))
  centres = np.round(np.arange(num_frames) * sample_rate / fps).astype(int)
  padded = np.pad(samples, (half, half + max(0, centres[-1] + half - len(samples)) if num_frames
                            else half))
  cumulative = np.concatenate([[0.0], np.cumsum(padded ** 2)])
  energy = (cumulative[centres + 2 * half] - cumulative[centres]) / (2 * half)
  return np.sqrt(np.maximum(energy, 0.0)).astype(np.float32)


def _frame_rate(fps: float) -> Fraction:
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  return Fraction(fps).limit_denominator(100_000)


def _check_audio(audio: np.ndarray) -> np.ndarray:
  audio = np.asarray(audio)
  if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
    raise ValueError(f"audio must be 1-D float in [-1, 1], got {audio.dtype} {audio.shape}")
  return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _audio_frame(samples: np.ndarray, sample_rate: int, pts: int) -> av.AudioFrame:
  frame = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
  frame.sample_rate = sample_rate
  frame.pts = pts
  frame.time_base = Fraction(1, sample_rate)
  return frame


class VideoWriter:
  """Writes an H.264 (yuv420p) mp4 batch by batch, with mono AAC audio if given: memory holds one
  batch of frames, however long the video.

    with VideoWriter(path, fps, audio) as writer:
      for frames in batches:  # uint8 [b, H, W, 3] RGB, the same H, W each time
        writer.write(frames)

  yuv420p needs even sizes: an odd height or width loses its last row or column. The video lasts
  T / fps seconds (T frames written) and the audio N / sample_rate seconds.

  Args:
    path: output file (.mp4 or .mov).
    fps: frame rate.
    audio: float [N] mono in [-1, 1], starting with frame 0; None writes no audio stream.
    sample_rate: sample rate of `audio`.
    crf: x264 constant rate factor (lower is better quality; 18 is visually lossless).
  """

  def __init__(self, path: str, fps: float, audio: np.ndarray | None = None,
               sample_rate: int = 16_000, crf: int = 18):
    self.path = path
    self._rate = _frame_rate(fps)
    self._audio = None if audio is None else _check_audio(audio)
    self._sample_rate = sample_rate
    self._crf = crf
    self._container = None  # opened with the first frames (their size sets the stream's)
    self._video_stream = self._audio_stream = None
    self._size = None  # (height, width) written
    self.num_frames = 0  # frames written
    self._written_samples = 0

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, error_type, error, traceback) -> None:
    if error_type is None:
      self.close()
    elif self._container is not None:
      self._container.close()

  def _open(self, shape: tuple[int, ...]) -> None:
    height, width = shape[1] // 2 * 2, shape[2] // 2 * 2
    if height == 0 or width == 0:
      raise ValueError(f"frames of shape {shape} are too small for yuv420p")
    self._size = (height, width)
    self._container = av.open(self.path, "w", options={"movflags": "faststart"})
    self._video_stream = self._container.add_stream("libx264", rate=self._rate,
                                                    options={"crf": str(self._crf)})
    self._video_stream.width, self._video_stream.height = width, height
    self._video_stream.pix_fmt = "yuv420p"
    if self._audio is not None:
      self._audio_stream = self._container.add_stream("aac", rate=self._sample_rate,
                                                      layout="mono")

  def _write_audio(self, until: int) -> None:
    if self._audio_stream is not None and until > self._written_samples:
      self._container.mux(self._audio_stream.encode(_audio_frame(
          self._audio[self._written_samples:until], self._sample_rate, self._written_samples)))
      self._written_samples = until

  def write(self, frames: np.ndarray) -> None:
    """Appends frames uint8 [b, H, W, 3] RGB."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"frames must be uint8 [b, H, W, 3], got {frames.dtype} {frames.shape}")
    if self._container is None and len(frames):
      self._open(frames.shape)
    height, width = self._size or (0, 0)
    for image in frames:
      if image.shape[0] // 2 * 2 != height or image.shape[1] // 2 * 2 != width:
        raise ValueError(f"a frame of shape {image.shape} after frames of {self._size}")
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]),
                                         format="rgb24")
      frame.pts = self.num_frames
      frame.time_base = 1 / self._rate
      self._container.mux(self._video_stream.encode(frame))
      self.num_frames += 1
      # Encode audio alongside the video so the muxer can interleave the two streams.
      if self._audio is not None:
        self._write_audio(min(len(self._audio),
                              round(self.num_frames / self._rate * self._sample_rate)))

  def close(self) -> None:
    """Flushes the encoders (the rest of the audio included) and closes the file."""
    if self._container is None:
      raise ValueError(f"no frames were written to {self.path}")
    self._container.mux(self._video_stream.encode(None))
    if self._audio is not None:
      self._write_audio(len(self._audio))
      self._container.mux(self._audio_stream.encode(None))
    self._container.close()


def write_video(path: str, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16_000, crf: int = 18) -> None:
  """Writes frames uint8 [T > 0, H, W, 3] RGB as an mp4 at once; the arguments are those of
  `VideoWriter`."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {frames.shape}")
  with VideoWriter(path, fps, audio, sample_rate, crf) as writer:
    writer.write(frames)


def write_audio(path: str, audio: np.ndarray, sample_rate: int = 16_000) -> None:
  """Writes mono audio: AAC in an mp4 container for .m4a/.mp4/.mov, 16-bit PCM for .wav.

  Args:
    path: output file; its extension picks the format.
    audio: float [N] mono in [-1, 1].
    sample_rate: sample rate of `audio`.
  """
  extension = os.path.splitext(path)[1].lower()
  if extension not in _AAC_EXTENSIONS + _WAV_EXTENSIONS:
    raise ValueError(
        f"{path}: unsupported audio extension {extension!r}; use one of "
        f"{_AAC_EXTENSIONS + _WAV_EXTENSIONS}")
  audio = _check_audio(audio)
  if not len(audio):
    raise ValueError(f"{path}: refusing to write zero-length audio")
  with av.open(path, "w") as container:
    if extension in _WAV_EXTENSIONS:
      stream = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
    else:
      stream = container.add_stream("aac", rate=sample_rate, layout="mono")
    container.mux(stream.encode(_audio_frame(audio, sample_rate, 0)))
    container.mux(stream.encode(None))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  """JPEG bytes of a uint8 [H, W, 3] RGB image."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
  """uint8 [H, W, 3] RGB image from JPEG (or any Pillow-readable) bytes."""
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))
