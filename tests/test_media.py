"""Tests for vasa_jax.data.media: frame resampling by timestamp, audio resampling, writers, errors."""

from fractions import Fraction

import av
import numpy as np
import pytest

from vasa_jax.data import media

BRIGHTNESS_STEP = 5


def counter_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
  """Flat grey frames whose brightness is BRIGHTNESS_STEP * frame index."""
  levels = (np.arange(num_frames) * BRIGHTNESS_STEP).astype(np.uint8)
  return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def frame_numbers(frames: np.ndarray) -> list[int]:
  return [int(round(float(frame.mean()) / BRIGHTNESS_STEP)) for frame in frames]


def sine(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
  t = np.arange(round(seconds * sample_rate)) / sample_rate
  return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def peak_frequency(audio: np.ndarray, sample_rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
  return float(np.argmax(spectrum) * sample_rate / len(audio))


def write_stereo_mp4(path, frames, fps, stereo, sample_rate):
  """An H.264 + stereo AAC mp4 written with PyAV directly (media.write_video writes mono)."""
  with av.open(str(path), "w") as container:
    video = container.add_stream("libx264", rate=Fraction(fps))
    video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    audio = container.add_stream("aac", rate=sample_rate, layout="stereo")
    for index, image in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts = index
      container.mux(video.encode(frame))
    container.mux(video.encode(None))
    frame = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = sample_rate, 0
    container.mux(audio.encode(frame))
    container.mux(audio.encode(None))


@pytest.fixture(name="stereo_30fps_mp4", scope="module")
def fixture_stereo_30fps_mp4(tmp_path_factory):
  """45 counter frames at 30 fps (1.5 s) and a 440 Hz stereo sine at 44.1 kHz."""
  path = tmp_path_factory.mktemp("media") / "counter.mp4"
  tone = sine(440.0, 1.5, 44_100)
  write_stereo_mp4(path, counter_frames(45), 30, np.stack([tone, tone]), 44_100)
  return str(path)


def test_read_video_resamples_30_to_25_fps_by_timestamp(stereo_30fps_mp4):
  clip = media.read_video(stereo_30fps_mp4, fps=25.0)
  # 1.5 s at 25 fps; output frame k at k / 25 s shows source frame round(k * 30 / 25).
  assert clip.frames.shape == (37, 48, 64, 3)
  assert clip.frames.dtype == np.uint8
  assert frame_numbers(clip.frames) == [round(k * 30 / 25) for k in range(37)]
  assert clip.fps == 25.0
  assert clip.source_fps == pytest.approx(30.0)
  assert clip.duration == pytest.approx(1.5)
  assert clip.start_time == pytest.approx(0.0)


def test_read_video_upsamples_and_stops_at_max_seconds(stereo_30fps_mp4):
  clip = media.read_video(stereo_30fps_mp4, fps=60.0, max_seconds=0.5)
  assert len(clip.frames) == 30
  # Odd k / 60 s lie halfway between two source frames: the tie goes to the later one.
  assert frame_numbers(clip.frames) == [(k + 1) // 2 for k in range(30)]


def test_read_audio_downmixes_and_resamples_to_16k_mono(stereo_30fps_mp4):
  audio = media.read_audio(stereo_30fps_mp4, sample_rate=16_000)
  assert audio.dtype == np.float32 and audio.ndim == 1
  assert abs(len(audio) - 1.5 * 16_000) <= 16_000 / 25  # Within one video frame.
  assert peak_frequency(audio, 16_000) == pytest.approx(440.0, abs=2.0)
  assert np.abs(audio).max() <= 1.0
  # Same tone in both channels: the mono mix keeps a clearly audible level.
  assert 0.2 < np.abs(audio[4000:-4000]).max() <= 1.0


def test_write_video_durations_and_audio_alignment(tmp_path):
  path = str(tmp_path / "written.mp4")
  fps, sample_rate, num_frames = 25.0, 16_000, 40
  # A tone that starts at 0.5 s (frame 12.5) and lasts to the end of the video's 1.6 s.
  audio = sine(1000.0, 1.6, sample_rate) * (np.arange(25_600) >= 8000)
  media.write_video(path, counter_frames(num_frames, 49, 67), fps, audio, sample_rate)
  with av.open(path) as container:
    assert container.streams.video[0].codec_context.name == "h264"
    assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert container.streams.audio[0].codec_context.name == "aac"
  clip = media.read_video(path, fps=fps)
  assert clip.frames.shape == (num_frames, 48, 66, 3)  # Odd sizes lose a row and a column.
  assert frame_numbers(clip.frames) == list(range(num_frames))
  assert clip.duration == pytest.approx(num_frames / fps)
  read_back = media.read_audio(path, sample_rate, start_time=clip.start_time)
  assert len(read_back) == len(audio)
  onset = int(np.argmax(np.abs(read_back) > 0.1))
  assert abs(onset - 8000) <= 16  # Audio lines up with frame 0 to within 1 ms.
  assert peak_frequency(read_back, sample_rate) == pytest.approx(1000.0, abs=2.0)


@pytest.mark.parametrize("extension", [".m4a", ".wav"])
def test_audio_round_trip(tmp_path, extension):
  path = str(tmp_path / f"tone{extension}")
  tone = sine(300.0, 1.234, 22_050, amplitude=0.3)
  media.write_audio(path, tone, 22_050)
  audio = media.read_audio(path, sample_rate=16_000)
  assert abs(len(audio) - round(1.234 * 16_000)) <= 1
  assert peak_frequency(audio, 16_000) == pytest.approx(300.0, abs=2.0)
  assert np.sqrt(np.mean(audio[1000:-1000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


def test_read_audio_mp3_drops_encoder_delay(tmp_path):
  path = str(tmp_path / "tone.mp3")
  tone = sine(300.0, 1.234, 44_100, amplitude=0.3)
  with av.open(path, "w") as container:
    stream = container.add_stream("libmp3lame", rate=44_100, layout="stereo")
    frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = 44_100, 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  audio = media.read_audio(path, sample_rate=16_000)
  assert abs(len(audio) - round(1.234 * 16_000)) <= 1
  # The sine starts at sample 0: it crosses 0.1 (a third of its amplitude) within a millisecond.
  assert np.argmax(np.abs(audio) > 0.1) < 16
  assert peak_frequency(audio, 16_000) == pytest.approx(300.0, abs=2.0)


def test_missing_file_raises_media_error_naming_it(tmp_path):
  path = str(tmp_path / "nowhere.mp4")
  for read in (media.read_video, media.read_audio):
    with pytest.raises(media.MediaError, match="nowhere.mp4: no such file"):
      read(path)


def test_truncated_and_corrupt_files_raise_media_error(tmp_path):
  path = tmp_path / "whole.mp4"
  media.write_video(str(path), np.random.default_rng(0).integers(0, 256, (50, 64, 64, 3), np.uint8),
                    25.0, sine(440.0, 2.0, 16_000), 16_000)
  truncated = tmp_path / "truncated.mp4"
  truncated.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"not a video " * 100)
  for bad in (truncated, corrupt):
    for read in (media.read_video, media.read_audio):
      with pytest.raises(media.MediaError, match=bad.name):
        read(str(bad))


def test_audio_less_file_raises_no_audio_error(tmp_path):
  path = str(tmp_path / "mute.mp4")
  media.write_video(path, counter_frames(10), 25.0)
  assert len(media.read_video(path).frames) == 10
  with pytest.raises(media.NoAudioError, match="mute.mp4: has no audio stream"):
    media.read_audio(path)
  assert issubclass(media.NoAudioError, media.MediaError)


def test_is_silent():
  rng = np.random.default_rng(0)
  assert media.is_silent(np.zeros(16_000, np.float32))
  assert media.is_silent(np.zeros(0, np.float32))
  assert media.is_silent(rng.normal(0, 10 ** (-70 / 20), 16_000).astype(np.float32))
  assert not media.is_silent(sine(200.0, 1.0, 16_000, amplitude=0.05))
  assert media.rms_dbfs(sine(200.0, 1.0, 16_000, amplitude=1.0)) == pytest.approx(-3.01, abs=0.01)


def test_jpeg_round_trip():
  image = np.zeros((32, 48, 3), np.uint8)
  image[:, :24] = (200, 40, 90)
  data = media.encode_jpeg(image, quality=95)
  assert data[:2] == b"\xff\xd8"
  decoded = media.decode_jpeg(data)
  assert decoded.shape == (32, 48, 3) and decoded.dtype == np.uint8
  assert np.abs(decoded.astype(int) - image).mean() < 3
  assert len(media.encode_jpeg(image, quality=30)) < len(data)
