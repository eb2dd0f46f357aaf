"""python -m vasa_jax.sample: photo + speech -> mp4 (offline and streaming), and clear errors.

The checkpoints are untrained tiny models (initial weights saved as training runs save them), the
photo a SynthTalk head that dlib detects, the speech a synthetic voiced signal.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import av
import jax
import numpy as np
import pytest
from PIL import Image

from configs import motion as motion_config_lib
from tests import fake_runs
from vasa_jax.data import media
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax import sample
from vasa_jax.inference import streaming
from vasa_jax.data import speech_features
from vasa_jax.training import checkpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEECH_SECONDS = 1.37  # 34.25 frames at 25 fps: 34 frames, two windows of the tiny model (W=25)
FPS = fake_runs.FPS
SAMPLE_RATE = fake_runs.SAMPLE_RATE


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """(latent workdir, motion workdir) of untrained tiny models."""
  return fake_runs.make_runs(str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
  """A 256 px SynthTalk head the face tracker finds, as a PNG."""
  path = str(tmp_path_factory.mktemp("photo") / "face.png")
  fake_runs.write_face_photo(path)
  return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
  """(path, samples): SPEECH_SECONDS of synthetic voiced speech as a 16 kHz wav."""
  path = str(tmp_path_factory.mktemp("speech") / "speech.wav")
  return path, fake_runs.write_speech(path, SPEECH_SECONDS)


def _flags(workdirs, photo, speech_path, output, *extra):
  return [f"--image={photo}", f"--audio={speech_path}", f"--latent_checkpoint={workdirs[0]}",
          f"--motion_checkpoint={workdirs[1]}", f"--output={output}", "--steps=4",
          *extra]


def _video_frames(path):
  with av.open(path) as container:
    return np.stack([frame.to_ndarray(format="rgb24")
                     for frame in container.decode(container.streams.video[0])])


def _check_video(path, waveform):
  expected_frames = round(len(waveform) / SAMPLE_RATE * FPS)
  frames = _video_frames(path)
  assert frames.shape == (expected_frames, 64, 64, 3)
  assert abs(len(frames) / FPS - len(waveform) / SAMPLE_RATE) <= 1.0 / FPS
  assert frames.std() > 1.0  # decoded images, not a constant
  audio = media.read_audio(path, SAMPLE_RATE)
  assert abs(len(audio) - len(waveform)) <= SAMPLE_RATE // 50  # AAC framing: < 20 ms
  length = min(len(audio), len(waveform))
  correlation = np.corrcoef(audio[:length], waveform[:length])[0, 1]
  assert correlation > 0.9, correlation
  return frames


@pytest.mark.slow
def test_cli_writes_video_with_audio(workdirs, photo, speech, tmp_path):
  output = str(tmp_path / "out" / "talking.mp4")
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  result = subprocess.run(
      [sys.executable, "-m", "vasa_jax.sample", *_flags(workdirs, photo, speech[0], output),
       "--gaze=5,-3", "--distance=1.1", "--seed=3"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"wrote {output}: 34 frames at 25 fps" in result.stdout
  _check_video(output, speech[1])


@pytest.fixture
def written_batches(monkeypatch):
  """The number of frames of each `media.VideoWriter.write` call, in order."""
  sizes = []
  write = media.VideoWriter.write

  def recording_write(self, frames):
    sizes.append(len(frames))
    return write(self, frames)

  monkeypatch.setattr(media.VideoWriter, "write", recording_write)
  return sizes


def test_stream_gives_the_same_frame_count(workdirs, photo, speech, tmp_path, capsys,
                                           written_batches):
  output = str(tmp_path / "streamed.mp4")
  assert sample.main(_flags(workdirs, photo, speech[0], output, "--stream",
                            "--chunk_frames=10")) == 0
  printed = capsys.readouterr().out
  assert "first-frame latency:" in printed and "sustained:" in printed
  _check_video(output, speech[1])
  # Written as made, decoder batch by decoder batch (8 frames at most), never all at once.
  assert sum(written_batches) == 34 and max(written_batches) <= 8, written_batches


def test_streaming_features_equal_offline_features(workdirs):
  head_config = checkpoint.read_config(workdirs[1])
  featurizer = speech_features.from_config(head_config.audio, head_config.fps)
  waveform = synthtalk.synthetic_speech(np.random.default_rng(2), 2.03, 200.0)
  offline = featurizer(waveform)
  for chunk_frames in (1, 7, 25, 60):
    features = streaming.StreamingFeatures(featurizer)
    parts = [features.push(chunk)
             for chunk in streaming.audio_chunks(waveform, chunk_frames, head_config.fps)]
    parts.append(features.finish())
    np.testing.assert_allclose(np.concatenate(parts), offline, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, workdirs):
  """Named paths of unusable inputs."""
  root = tmp_path_factory.mktemp("bad")
  paths = {name: str(root / name) for name in (
      "gray.png", "empty.wav", "silent.wav", "garbage.wav", "garbage_run", "garbage_checkpoint",
      "mismatched_run", "gray.mp4")}
  Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(paths["gray.png"])
  media.write_video(paths["gray.mp4"], np.full((10, 128, 128, 3), 128, np.uint8), FPS)
  fake_runs.write_wav(paths["empty.wav"], [])
  fake_runs.write_wav(paths["silent.wav"], np.zeros(SAMPLE_RATE))
  with open(paths["garbage.wav"], "wb") as file:
    file.write(os.urandom(4000))
  os.makedirs(os.path.join(paths["garbage_run"], "checkpoints", "0"))
  with open(os.path.join(paths["garbage_run"], "config.json"), "w") as file:
    file.write("{not json")
  # A readable config over a damaged checkpoint.
  os.makedirs(paths["garbage_checkpoint"])
  checkpoint.write_config(paths["garbage_checkpoint"], motion_config_lib.get_config("tiny"))
  step_dir = os.path.join(paths["garbage_checkpoint"], "checkpoints", "0", "state")
  os.makedirs(step_dir)
  with open(os.path.join(step_dir, "_METADATA"), "w") as file:
    file.write("garbage")
  # A motion model for another latent model (z_dyn of 8 values instead of 16).
  mismatched = motion_config_lib.get_config("tiny")
  mismatched.model.motion_dim = motion_config_lib.POSE_DIM + 8
  fake_runs.save_motion_run(paths["mismatched_run"], mismatched)
  return paths


@pytest.mark.parametrize("change,message", [
    ({"image": "missing.png"}, "image '.*missing.png' does not exist"),
    ({"image": "gray.png"}, "no face found in image"),
    ({"audio": "missing.wav"}, "audio '.*missing.wav' does not exist"),
    ({"audio": "empty.wav"}, "is empty \\(no audio stream or zero-length audio\\)"),
    ({"audio": "silent.wav"}, "is silent"),
    ({"audio": "garbage.wav"}, "cannot read audio"),
    ({"motion": "garbage_run"}, "cannot read .*config.json"),
    ({"motion": "garbage_checkpoint"}, "cannot read checkpoint|holds no checkpoint"),
    ({"motion": "latent"}, "is a 'latent' run, expected a 'motion' run"),
    ({"latent": "motion"}, "is a 'motion' run, expected a 'latent' run"),
    ({"motion": "mismatched_run"}, "makes frames of 15 values but the latent model .* needs 23"),
    ({"output": "never.avi"}, "--output .* must end in one of"),
    ({"flags": ["--steps=1001"]}, "denoising steps must be in \\[1, 1000\\]"),
    ({"flags": ["--emotion=0.5"]}, "--emotion: emotion '0.5' has 1 score\\(s\\); give 8"),
    ({"flags": ["--emotion=joyful"]}, "--emotion: emotion 'joyful' is neither a name"),
    ({"flags": ["--head_motion=-0.5"]}, "--head_motion must be a number >= 0, got -0.5"),
    ({"flags": ["--head_motion=nan"]}, "--head_motion must be a number >= 0, got nan"),
    ({"flags": ["--pose_from=GRAY"]}, "no face found in driving video '.*gray.mp4'"),
    ({"flags": ["--pose_from=missing.mp4"]}, "driving video 'missing.mp4' does not exist"),
    ({"flags": ["--save_motion=motion.txt"]}, "--save_motion 'motion.txt' must end in .npz"),
])
def test_bad_inputs_fail_with_the_problem_named(workdirs, photo, speech, bad_inputs, tmp_path,
                                                capsys, change, message):
  def resolve(name, default):
    if name not in change:
      return default
    value = change[name]
    if value in ("latent", "motion"):
      return workdirs[0] if value == "latent" else workdirs[1]
    return bad_inputs.get(value, str(tmp_path / value))
  output = resolve("output", str(tmp_path / "never.mp4"))
  flags = [f"--image={resolve('image', photo)}", f"--audio={resolve('audio', speech[0])}",
           f"--latent_checkpoint={resolve('latent', workdirs[0])}",
           f"--motion_checkpoint={resolve('motion', workdirs[1])}", f"--output={output}",
           *[flag.replace("GRAY", bad_inputs["gray.mp4"]) for flag in change.get("flags", [])]]
  assert sample.main(flags) == 1
  error = capsys.readouterr().err.strip()
  assert len(error.splitlines()) == 1 and error.startswith("error: "), error
  assert re.search(message, error), error
  assert not os.path.exists(output)


def test_cli_error_is_one_line_without_traceback(workdirs, speech, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "vasa_jax.sample", f"--image={tmp_path / 'missing.jpg'}",
       f"--audio={speech[0]}", f"--latent_checkpoint={workdirs[0]}",
       f"--motion_checkpoint={workdirs[1]}", f"--output={tmp_path / 'out.mp4'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: image ")
  assert "does not exist" in result.stderr


@pytest.mark.parametrize("psnr_self,warned", [(9.2, True), (22.9, False)])
def test_undertrained_checkpoint_gets_one_warning_line(workdirs, photo, speech, tmp_path, capsys,
                                                       psnr_self, warned):
  """The stage-1 run's recorded held-out PSNR against its flat mean-colour baseline decides; the
  warning comes first, before anything else (here an --output error ends the run early)."""
  latent = str(tmp_path / "latent")
  shutil.copytree(workdirs[0], latent)
  with open(os.path.join(latent, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump({"total_steps": 2000, "main_metric": "loss/generator_total", "history": {},
               "latest": {"eval/psnr_self": [500, psnr_self],
                          "eval/psnr_mean_colour": [500, 16.1]}}, f)
  flags = _flags((latent, workdirs[1]), photo, speech[0], str(tmp_path / "never.avi"))
  assert sample.main(flags) == 1
  lines = capsys.readouterr().err.strip().splitlines()
  assert lines[-1].startswith("error: --output")
  if warned:
    assert len(lines) == 2 and lines[0].startswith(
        f"warning: the stage-1 checkpoint {latent!r} (step 0) looks undertrained: held-out "
        "self-reconstruction PSNR 9.2 dB is less than 3 dB above the 16.1 dB"), lines
  else:
    assert len(lines) == 1, lines


# ----------------------------------------------------------------------------------------------
# Head pose controls and --save_motion.
# ----------------------------------------------------------------------------------------------
def _saved_motion(workdirs, photo, speech, tmp_path, name, *flags):
  """(z_pose [T, 7], z_dyn [T, D], controls dict) that --save_motion wrote for these flags."""
  path = str(tmp_path / f"{name}.npz")
  assert sample.main(_flags(workdirs, photo, speech[0], str(tmp_path / f"{name}.mp4"),
                            f"--save_motion={path}", "--seed=5", *flags)) == 0
  with np.load(path) as saved:
    assert float(saved["fps"]) == FPS
    return saved["z_pose"], saved["z_dyn"], json.loads(str(saved["controls"]))


def test_head_motion_scales_the_pose_deviation_from_the_photo(workdirs, photo, speech, tmp_path,
                                                              written_batches):
  generated, dyn, controls = _saved_motion(workdirs, photo, speech, tmp_path, "generated")
  assert written_batches == [8, 8, 8, 8, 2]  # offline too: written decoder batch by batch
  assert generated.shape == (34, 7) and dyn.shape == (34, 16)
  assert controls["head_motion"] == 1.0 and controls["seed"] == 5 and controls["num_steps"] == 4
  assert generated.std(axis=0).max() > 1e-3  # the generated head moves
  # 0: the head stays in one pose (streamed here: the streaming API takes the control too).
  still, still_dyn, controls = _saved_motion(workdirs, photo, speech, tmp_path, "still",
                                             "--head_motion=0", "--stream")
  assert controls["head_motion"] == 0.0 and controls["stream"]
  np.testing.assert_array_equal(still, np.broadcast_to(still[:1], still.shape))
  assert np.abs(still[0] - generated).max() > 1e-3
  # The facial dynamics are the generated ones (streaming in windows of W = offline).
  np.testing.assert_allclose(still_dyn, dyn, atol=1e-4)
  # 0.5: half way between the photo's pose and the generated one.
  half, half_dyn, _ = _saved_motion(workdirs, photo, speech, tmp_path, "half",
                                    "--head_motion=0.5")
  np.testing.assert_allclose(half, 0.5 * (still + generated), atol=1e-5)
  np.testing.assert_array_equal(half_dyn, dyn)


def test_pose_from_reproduces_the_driving_videos_z_pose(workdirs, photo, speech, tmp_path):
  """The shown z_pose is the driving video's z_pose as stage-2 data preparation gets it (the
  tracker's crops, JPEG-stored, through `data_prep.extract_motion`'s motion encoder); the
  untrained pose head is zero-initialised, so a copy with a random one makes z_pose move."""
  from vasa_jax.data import extract_motion, face_tracker  # pylint: disable=g-import-not-at-top
  driving = str(tmp_path / "driving.mp4")
  fake_runs.write_driving_video(driving, 40)  # longer than the speech's 34 frames
  workdirs = (fake_runs.save_posing_latent_run(workdirs[0], str(tmp_path / "latent")),
              workdirs[1])
  z_pose, dyn, controls = _saved_motion(workdirs, photo, speech, tmp_path, "driven",
                                        f"--pose_from={driving}")
  assert controls["pose_from"] == "driving.mp4"
  crops = face_tracker.FaceTracker().track_clip(media.read_video(driving, FPS).frames, FPS,
                                               check_quality=False).crops
  encoder = extract_motion.MotionEncoder(extract_motion.load_latent_encoder(workdirs[0]), 8)
  expected = encoder([media.encode_jpeg(crop, 95) for crop in crops])[:34, :7]  # [34, 7]
  # Each component's error (JPEG storage: up to 0.41x of it here) stays below its mean
  # frame-to-frame change: the pose is the video's, frame for frame (a one-frame shift fails).
  error = np.abs(z_pose - expected).max(axis=0)  # [7]
  step = np.abs(np.diff(expected, axis=0)).mean(axis=0)  # [7]
  assert np.all(error < 0.8 * step), (error, step)
  _, generated_dyn, _ = _saved_motion(workdirs, photo, speech, tmp_path, "generated")
  np.testing.assert_array_equal(dyn, generated_dyn)  # the facial dynamics come from the audio


def test_emotion_by_name_conditions_the_motion(workdirs, photo, speech, tmp_path):
  """--emotion=happy is all weight on happiness (HSEmotion's class order) and changes the
  generated motion against --emotion=neutral (the random-weight model reads the condition)."""
  happy_pose, happy_dyn, controls = _saved_motion(workdirs, photo, speech, tmp_path, "happy",
                                                  "--emotion=happy")
  assert controls["emotion"] == [0, 0, 0, 0, 1, 0, 0, 0]
  neutral_pose, neutral_dyn, controls = _saved_motion(workdirs, photo, speech, tmp_path,
                                                      "neutral", "--emotion=neutral")
  assert controls["emotion"] == [0, 0, 0, 0, 0, 1, 0, 0]
  assert np.abs(np.concatenate([happy_pose - neutral_pose, happy_dyn - neutral_dyn], 1)).max() > (
      1e-4)
  _, scores_dyn, controls = _saved_motion(workdirs, photo, speech, tmp_path, "scores",
                                          "--emotion=0,0,0,0,2,0,0,0")
  assert controls["emotion"] == [0, 0, 0, 0, 1, 0, 0, 0]  # scaled to sum to 1
  np.testing.assert_array_equal(scores_dyn, happy_dyn)


def test_negative_emotion_score_is_one_error_line(workdirs, photo, speech, tmp_path):
  output = str(tmp_path / "never.mp4")
  result = subprocess.run(
      [sys.executable, "-m", "vasa_jax.sample",
       *_flags(workdirs, photo, speech[0], output, "--emotion=0,0,0,0,1,0,0,-0.5")],
      capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --emotion: emotion '0,0,0,0,1,0,0,-0.5' has score -0.5; scores must be finite "
      "and >= 0")
  assert "Traceback" not in result.stderr and not os.path.exists(output)
