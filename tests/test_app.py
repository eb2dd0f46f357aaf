"""python -m vasa_jax.app: the page in a real browser, the API through gradio_client, safe defaults.

One server (`python -m vasa_jax.app` in a subprocess on 127.0.0.1) over untrained tiny runs
(tests/fake_runs.py) serves every test; the photo is a SynthTalk head, the speech synthetic.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import av
import httpx
import jax
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from playwright.sync_api import sync_playwright

from tests import fake_runs
from vasa_jax import app as app_lib
from vasa_jax.data import media
from vasa_jax import sample
from vasa_jax.inference import talking_head

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEECH_SECONDS = 1.37  # 34 frames at 25 fps
MAX_AUDIO_SECONDS = 2.0  # the test server's --max_audio_seconds
MAX_FILE_MB = 1  # the test server's --max_file_mb
# Debian's chromium (Playwright's own browser download is not reachable), offline and quiet.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# Controls of one API request, and the `vasa_jax.sample` flags that ask for the same video.
CONTROLS = dict(set_gaze=True, gaze_theta=5.0, gaze_phi=-3.0, set_distance=True, distance=1.1,
                cfg_audio=0.8, cfg_gaze=1.5, steps=4, seed=3)
CLI_FLAGS = ["--gaze=5,-3", "--distance=1.1", "--cfg_audio=0.8", "--cfg_gaze=1.5", "--steps=4",
             "--seed=3"]
# Mean |difference| (0-255) of two decoded videos: below ENCODER_NOISE they are the same frames,
# above CONTROL_EFFECT a control changed them.
ENCODER_NOISE = 2.2
CONTROL_EFFECT = 3.0


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """(latent workdir, motion workdir) of untrained tiny models."""
  return fake_runs.make_runs(str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Named input files: good ones, and one of each problem the page must report."""
  root = tmp_path_factory.mktemp("inputs")
  paths = {name: str(root / name) for name in (
      "face.png", "two_faces.png", "gray.png", "speech.wav", "long.wav", "empty.wav",
      "silent.wav", "garbage.wav", "big.wav", "driving.mp4", "gray.mp4")}
  fake_runs.write_face_photo(paths["face.png"])
  face = np.asarray(Image.open(paths["face.png"]))
  Image.fromarray(np.concatenate([face, face], axis=1)).save(paths["two_faces.png"])
  Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(paths["gray.png"])
  fake_runs.write_speech(paths["speech.wav"], SPEECH_SECONDS)
  fake_runs.write_speech(paths["long.wav"], MAX_AUDIO_SECONDS + 0.5)
  fake_runs.write_wav(paths["empty.wav"], [])
  fake_runs.write_wav(paths["silent.wav"], np.zeros(fake_runs.SAMPLE_RATE))
  with open(paths["garbage.wav"], "wb") as file:
    file.write(os.urandom(4000))
  noise = np.random.default_rng(0).normal(0, 3000, int(MAX_FILE_MB * 1.2 * 2**20) // 2)
  fake_runs.write_wav(paths["big.wav"], noise)  # over the upload cap
  fake_runs.write_driving_video(paths["driving.mp4"], 40)
  media.write_video(paths["gray.mp4"], np.full((10, 128, 128, 3), 128, np.uint8), fake_runs.FPS)
  return paths


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(workdirs, tmp_path_factory):
  """(url, log path) of `python -m vasa_jax.app` with its default host and no --share."""
  port = _free_port()
  log_path = str(tmp_path_factory.mktemp("server") / "server.log")
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")))
  with open(log_path, "w") as log:
    process = subprocess.Popen(
        [sys.executable, "-m", "vasa_jax.app", f"--latent_checkpoint={workdirs[0]}",
         f"--motion_checkpoint={workdirs[1]}", f"--port={port}",
         f"--max_audio_seconds={MAX_AUDIO_SECONDS}", f"--max_file_mb={MAX_FILE_MB}"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  try:
    deadline = time.monotonic() + 240
    while True:
      assert process.poll() is None, open(log_path).read()[-3000:]
      assert time.monotonic() < deadline, "the app did not start in 240 s"
      try:
        if httpx.get(url, timeout=5).status_code == 200:
          break
      except httpx.TransportError:
        pass
      time.sleep(1)
    yield url, log_path
  finally:
    process.terminate()
    try:
      process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


@pytest.fixture(scope="module")
def client(server):
  return Client(server[0], verbose=False)


def _video_frames(path):
  with av.open(path) as container:
    return np.stack([frame.to_ndarray(format="rgb24")
                     for frame in container.decode(container.streams.video[0])]).astype(np.float32)


def _speech_frames(seconds):
  return round(seconds * fake_runs.FPS)


def test_serves_only_this_machine_without_a_share_link(server):
  log = open(server[1]).read()
  assert f"Running on local URL:  {server[0].rstrip('/')}" in log
  assert "gradio.live" not in log and "public URL" not in log


def test_browser_uploads_generates_and_shows_problems(server, files):
  url, _ = server
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
      page = browser.new_page()
      hosts = set()
      page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
      page.goto(url)
      page.locator("#photo input[type=file]").set_input_files(files["face.png"])
      crop = page.locator("#crop img")
      crop.wait_for(timeout=60_000)
      page.wait_for_function("() => document.querySelector('#crop img').naturalWidth > 0")
      assert crop.evaluate("image => [image.naturalWidth, image.naturalHeight]") == [
          fake_runs.IMAGE_SIZE, fake_runs.IMAGE_SIZE]  # the crop at the model's image size
      page.locator("#speech input[type=file]").set_input_files(files["speech.wav"])
      page.locator("#speech audio").first.wait_for(state="attached", timeout=30_000)  # uploaded
      page.locator("#generate").click()
      page.wait_for_function(
          "() => { const video = document.querySelector('#video video');"
          " return video && video.readyState >= 1 && isFinite(video.duration); }",
          timeout=180_000)
      duration = page.evaluate("document.querySelector('#video video').duration")
      assert abs(duration - SPEECH_SECONDS) <= 0.05, duration
      summary = page.locator("#summary textarea").input_value()
      assert summary.startswith(f"{_speech_frames(SPEECH_SECONDS)} frames at 25 fps"), summary

      # A photo without a face: the page says so, as a message, no traceback.
      page.locator("#photo input[type=file]").set_input_files(files["gray.png"])
      message = page.locator("[data-testid=toast-text]").first
      message.wait_for(timeout=60_000)
      assert message.inner_text().strip() == "no face found in the photo"
      assert "Traceback" not in page.content()
      # Everything came from the app's own server (no fonts, scripts or analytics from outside).
      assert hosts == {url.split("/")[2]}, hosts
    finally:
      browser.close()


def test_api_video_is_the_sample_cli_video_and_follows_each_control(client, files, workdirs,
                                                                    tmp_path):
  photo, speech = handle_file(files["face.png"]), handle_file(files["speech.wav"])
  video, summary, _ = client.predict(photo, speech, api_name="/generate", **CONTROLS)
  frames = _video_frames(video)
  assert frames.shape == (_speech_frames(SPEECH_SECONDS), fake_runs.IMAGE_SIZE,
                          fake_runs.IMAGE_SIZE, 3)
  assert summary.startswith(f"{len(frames)} frames at 25 fps ({SPEECH_SECONDS:.2f} s of speech)")
  assert abs(len(frames) / fake_runs.FPS - SPEECH_SECONDS) <= 1 / fake_runs.FPS
  # The speech is the video's audio track.
  audio = media.read_audio(video, fake_runs.SAMPLE_RATE)
  waveform = media.read_audio(files["speech.wav"], fake_runs.SAMPLE_RATE)
  assert abs(len(audio) - len(waveform)) <= fake_runs.SAMPLE_RATE // 50  # AAC framing: < 20 ms
  length = min(len(audio), len(waveform))
  assert np.corrcoef(audio[:length], waveform[:length])[0, 1] > 0.9

  cli_output = str(tmp_path / "cli.mp4")
  assert sample.main([f"--image={files['face.png']}", f"--audio={files['speech.wav']}",
                      f"--latent_checkpoint={workdirs[0]}", f"--motion_checkpoint={workdirs[1]}",
                      f"--output={cli_output}", *CLI_FLAGS]) == 0
  cli_frames = _video_frames(cli_output)
  # One way to make a video: the same frames up to the H.264 encoder, which is not bit-exact
  # from run to run here (the same frames encoded 8 times decoded up to 1.7 apart, mean
  # |difference| over all pixels), while each control below moved the video by 3.5 or more.
  assert np.abs(frames - cli_frames).mean() < ENCODER_NOISE
  for change in (dict(seed=4), dict(set_gaze=False), dict(gaze_theta=25.0),
                 dict(set_distance=False), dict(distance=2.0), dict(cfg_audio=2.0),
                 dict(cfg_gaze=5.0), dict(steps=6), dict(head_motion=0.0)):
    other, _, _ = client.predict(photo, speech, api_name="/generate", **{**CONTROLS, **change})
    assert np.abs(_video_frames(other) - cli_frames).mean() > CONTROL_EFFECT, change


def test_api_defaults_and_streaming_path(client, files):
  photo, speech = handle_file(files["face.png"]), handle_file(files["speech.wav"])
  video, summary, _ = client.predict(photo, speech, api_name="/generate")  # every control out
  assert len(_video_frames(video)) == _speech_frames(SPEECH_SECONDS), summary
  streamed, summary, _ = client.predict(photo, speech, api_name="/generate", steps=4,
                                        stream=True)
  assert re.search(r"streaming: first frame \d+ ms after the first audio chunk", summary), summary
  assert len(_video_frames(streamed)) == _speech_frames(SPEECH_SECONDS)


def _motion(path):
  """(z_pose [T, 7], z_dyn [T, D], controls) of a motion npz the app returned."""
  with np.load(path) as saved:
    return saved["z_pose"], saved["z_dyn"], json.loads(str(saved["controls"]))


def test_api_motion_file_head_motion_and_driving_video(client, files):
  photo, speech = handle_file(files["face.png"]), handle_file(files["speech.wav"])
  _, _, motion = client.predict(photo, speech, api_name="/generate", steps=4, seed=2)
  z_pose, z_dyn, controls = _motion(motion)
  frames = _speech_frames(SPEECH_SECONDS)
  assert z_pose.shape == (frames, 7) and z_dyn.shape == (frames, 16)
  assert controls["head_motion"] == 1.0 and controls["seed"] == 2 and controls["num_steps"] == 4
  assert z_pose.std(axis=0).max() > 1e-3  # the generated head moves
  # A still head: one pose throughout (the photo's), the same facial dynamics.
  _, _, still = client.predict(photo, speech, api_name="/generate", steps=4, seed=2,
                               head_motion=0.0)
  still_pose, still_dyn, controls = _motion(still)
  assert controls["head_motion"] == 0.0
  np.testing.assert_array_equal(still_pose, np.broadcast_to(still_pose[:1], still_pose.shape))
  np.testing.assert_array_equal(still_dyn, z_dyn)
  # The driving video's pose: this untrained encoder's pose head is zero-initialised, so the
  # video's z_pose is 0 in every frame (tests/test_sample_cli.py checks a moving one).
  _, _, driven = client.predict(photo, speech, api_name="/generate", steps=4, seed=2,
                                pose_from=handle_file(files["driving.mp4"]))
  driven_pose, driven_dyn, controls = _motion(driven)
  assert controls["pose_from"] == "driving.mp4"
  np.testing.assert_array_equal(driven_pose, np.zeros_like(driven_pose))
  np.testing.assert_array_equal(driven_dyn, z_dyn)
  # The emotion, by name: all weight on happiness, and other motion than the dropped emotion.
  _, _, happy = client.predict(photo, speech, api_name="/generate", steps=4, seed=2,
                               emotion="happy")
  _, happy_dyn, controls = _motion(happy)
  assert controls["emotion"] == [0, 0, 0, 0, 1, 0, 0, 0]
  assert np.abs(happy_dyn - z_dyn).max() > 1e-4


def test_api_crop_is_the_face_crop_at_the_model_size(client, files):
  crop = np.asarray(Image.open(client.predict(handle_file(files["face.png"]), api_name="/crop")))
  face = talking_head.crop_face(talking_head.read_photo(files["face.png"]))
  expected = Image.fromarray(face).resize((fake_runs.IMAGE_SIZE,) * 2, Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(crop[..., :3], np.asarray(expected))


@pytest.mark.parametrize("photo,speech,message,controls", [
    ("gray.png", "speech.wav", "^no face found in the photo$", None),
    ("two_faces.png", "speech.wav", "^several faces found in the photo", None),
    (None, "speech.wav", "^upload a photo with one face first$", None),
    ("face.png", None, "^upload or record speech first$", None),
    ("face.png", "empty.wav", "^audio 'empty.wav' is empty", None),
    ("face.png", "silent.wav", "^audio 'silent.wav' is silent", None),
    ("face.png", "garbage.wav", "^cannot read audio 'garbage.wav'", None),
    ("face.png", "long.wav", f"^the speech is 2.5 s long; this server takes at most "
                             f"{MAX_AUDIO_SECONDS:g} s", None),
    # Gradio checks the slider's range itself.
    ("face.png", "speech.wav", "^Value -0.5 is less than minimum value 0.0.$",
     dict(head_motion=-0.5)),
    ("face.png", "speech.wav", "^no face found in driving video 'gray.mp4'$",
     dict(pose_from="gray.mp4")),
    ("face.png", "speech.wav", "^emotion 'joyful' is neither a name", dict(emotion="joyful")),
    ("face.png", "speech.wav", "^emotion '0,1' has 2 score", dict(emotion="0,1")),
])
def test_api_bad_input_is_a_message_and_the_server_keeps_serving(client, files, photo, speech,
                                                                  message, controls):
  def upload(name):
    return None if name is None else handle_file(files[name])
  controls = {name: upload(value) if name == "pose_from" else value
              for name, value in (controls or {}).items()}
  with pytest.raises(AppError) as raised:
    client.predict(upload(photo), upload(speech), api_name="/generate", steps=4, **controls)
  assert re.search(message, str(raised.value)), str(raised.value)
  assert "/" not in str(raised.value)  # no server paths, no traceback
  video, _, _ = client.predict(upload("face.png"), upload("speech.wav"), api_name="/generate",
                               steps=4)
  assert len(_video_frames(video)) == _speech_frames(SPEECH_SECONDS)


def test_uploads_over_the_cap_are_refused(server, files):
  with open(files["big.wav"], "rb") as file:
    response = httpx.post(server[0] + "gradio_api/upload", files={"files": file}, timeout=60)
  assert response.status_code == 413, response.text
  with open(files["speech.wav"], "rb") as file:
    assert httpx.post(server[0] + "gradio_api/upload", files={"files": file},
                      timeout=60).status_code == 200


@pytest.mark.parametrize("latent,motion,message", [
    ("missing", "motion", "error: .*missing"),
    ("motion", "latent", "is a 'motion' run, expected a 'latent' run"),
])
def test_bad_checkpoints_end_with_one_line(workdirs, tmp_path, capsys, latent, motion, message):
  runs = {"latent": workdirs[0], "motion": workdirs[1], "missing": str(tmp_path / "missing")}
  assert app_lib.main([f"--latent_checkpoint={runs[latent]}",
                       f"--motion_checkpoint={runs[motion]}"]) == 1
  error = capsys.readouterr().err.strip()
  assert len(error.splitlines()) == 1 and error.startswith("error: "), error
  assert re.search(message, error), error
