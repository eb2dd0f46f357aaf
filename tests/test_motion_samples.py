"""Stage 2's evaluator of rendered samples (`vasa_jax.evaluators.motion_samples`): untrained tiny
models, so the plumbing is what is checked: the strip, the videos, and statistics computed from
the rendered frames and the clips' speech."""

import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import capp as capp_config_lib
from configs import latent as latent_config_lib
from configs import motion as motion_config_lib
from data_prep import convert_weights
from tests import fake_motion
from tests import fake_runs
from tests import torch_syncnet
from vasa_jax.data import input_pipeline
from vasa_jax.data import media
from vasa_jax.evaluators import capp as capp_eval
from vasa_jax.evaluators import lip_sync
from vasa_jax.evaluators import mfcc
from vasa_jax.evaluators import motion_samples
from vasa_jax.evaluators import syncnet as sync_eval
from vasa_jax.evaluators import tracking
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import capp as capp_model
from vasa_jax.models import pretrained
from vasa_jax.models import syncnet as syncnet_model
from vasa_jax.trainers import motion
from vasa_jax.training import loop

CLIP_FRAMES = 30  # eval.clip_seconds 1.2 at 25 fps: two windows of the tiny model (W = 25)


class RecordingWriter:
  def __init__(self):
    self.scalars, self.images = {}, {}

  def write_scalars(self, step, scalars):  # pylint: disable=unused-argument
    self.scalars.update(scalars)

  def write_images(self, step, images):  # pylint: disable=unused-argument
    self.images.update(images)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """(motion data dir whose manifest names a tiny stage-1 run and clip shards, clip dir,
  {split: motion records})."""
  root = tmp_path_factory.mktemp("samples")
  latent = latent_config_lib.get_config("tiny")
  model = autoencoder_lib.FaceAutoencoder.from_config(latent.model)
  image = jnp.zeros((1, latent.image_size, latent.image_size, 3))
  fake_runs.save_run(str(root / "latent"), latent, {
      "ema_generator": fake_runs.init_params(model.init, jax.random.key(0, impl="rbg"), image,
                                             image), "step": 0})
  split_records = fake_motion.make_motion_data_dir(
      str(root / "motion"), latent_checkpoint=str(root / "latent"),
      clip_data_dir=str(root / "clips"))
  return str(root / "motion"), str(root / "clips"), split_records


def sample_config(data_dir):
  config = motion_config_lib.get_config("tiny")
  config.data_dir = data_dir
  config.batch_size = 8
  config.eval_every_steps = 1
  config.eval.update(num_clips=2, clip_seconds=CLIP_FRAMES / 25, strip_frames=4)
  config.sampling.num_steps = 4
  return config


def initial_state(task, config):
  return jax.jit(lambda rng: nn.meta.unbox(task.init_state(rng)))(loop.root_rng(config))


def test_eval_renders_a_strip_and_scores_lip_sync_on_the_rendered_frames(data, tmp_path,
                                                                        monkeypatch):
  data_dir, clip_dir, split_records = data
  config = sample_config(data_dir)
  task = motion.make_task(config, workdir=str(tmp_path))
  tracked = []

  def fake_track_mouth(frames, tracker=None):  # pylint: disable=unused-argument
    """A face in every frame, its 'mouth opening' the frame's mean brightness."""
    tracked.append(np.array(frames))
    return lip_sync.MouthTrack(found=np.ones(len(frames), bool),
                               opening=frames.astype(np.float64).mean(axis=(1, 2, 3)))

  monkeypatch.setattr(lip_sync, "track_mouth", fake_track_mouth)
  writer = RecordingWriter()
  task.evaluate(initial_state(task, config), 7, writer)

  # The strip: a row per clip, its source frame (the clip shards' first frame) and 4 renders.
  strip = writer.images["eval/samples"]
  assert strip.shape == (1, 2 * 64, 5 * 64, 3) and strip.dtype == np.uint8
  sources = [input_pipeline.decode_frame(record["frames"][0], 64)
             for record in input_pipeline.split_records(clip_dir, "test")]
  assert len(tracked) == 2
  for row, (source, frames) in enumerate(zip(sources, tracked)):
    assert frames.shape == (CLIP_FRAMES, 64, 64, 3) and frames.dtype == np.uint8
    cells = strip[0, row * 64:(row + 1) * 64].reshape(64, 5, 64, 3).transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(cells[0], source)
    np.testing.assert_array_equal(cells[1:], frames[[0, 10, 19, 29]])
    assert frames.std() > 0  # decoded images, not a constant

  # The lip-sync numbers come from those frames and each clip's own speech.
  speech = [record["audio"][:CLIP_FRAMES * fake_motion.SAMPLES_PER_FRAME] / 32768.0
            for record in split_records["test"]]
  expected = [lip_sync.best_lag_correlation(
      frames.astype(np.float64).mean(axis=(1, 2, 3)),
      media.speech_envelope(waveform, CLIP_FRAMES, 25.0))[0]
      for frames, waveform in zip(tracked, speech)]
  scalars = writer.scalars
  assert np.all(np.isfinite(expected))
  np.testing.assert_allclose(scalars["eval/mouth_envelope_correlation"], np.mean(expected),
                             rtol=1e-6)
  assert scalars["eval/face_found_rate"] == 1.0
  assert scalars["eval/mouth_envelope_correlation_clips"] == 2
  assert np.isfinite(scalars["eval/shuffled_audio_correlation"])
  # Delta P of the generated and the extracted motion (degrees of z_pose's angles).
  real = np.mean([np.mean(np.abs(np.diff(np.rad2deg(record["motion"][:CLIP_FRAMES, :3]), axis=0)))
                  for record in split_records["test"]])
  np.testing.assert_allclose(scalars["eval/delta_pose_degrees_real"], real, rtol=1e-5)
  assert np.isfinite(scalars["eval/delta_pose_degrees"]) and scalars["eval/delta_pose_degrees"] > 0
  assert {"eval/x0_loss", "eval/x0_loss_of_the_mean"} <= set(scalars)

  # The clips as videos with their speech.
  videos = sorted(os.listdir(tmp_path / "eval_samples" / "7"))
  assert videos == ["0_spk4_clip_00004.mp4", "1_spk5_clip_00005.mp4"]
  clip = media.read_video(str(tmp_path / "eval_samples" / "7" / videos[0]))
  assert clip.frames.shape == (CLIP_FRAMES, 64, 64, 3)


def test_without_a_stage1_run_only_delta_p_is_written(tmp_path, caplog):
  data_dir = str(tmp_path / "motion")
  fake_motion.make_motion_data_dir(data_dir)  # its manifest names no stage-1 run
  config = sample_config(data_dir)
  caplog.set_level(logging.WARNING)
  task = motion.make_task(config)
  assert any("stage-2 evaluation renders no frames" in record.getMessage()
             for record in caplog.records)
  writer = RecordingWriter()
  task.evaluate(initial_state(task, config), 1, writer)
  assert not writer.images
  assert {"eval/delta_pose_degrees", "eval/delta_pose_degrees_real"} <= set(writer.scalars)
  assert not any(name.startswith("eval/mouth") for name in writer.scalars)


def test_delta_pose_is_the_mean_absolute_angle_step_in_degrees():
  motion_frames = np.zeros((3, 23), np.float32)
  motion_frames[:, 0] = np.deg2rad([0.0, 2.0, 5.0])  # yaw steps 2 and 3 degrees
  motion_frames[:, 2] = np.deg2rad([0.0, -1.0, -1.0])  # roll steps 1 and 0
  motion_frames[:, 4] = [0.0, 9.0, 0.0]  # a translation: not an angle
  np.testing.assert_allclose(motion_samples.delta_pose_degrees(motion_frames), 6.0 / 6, rtol=1e-5)


def test_eval_adds_syncnet_and_capp_scores_of_the_rendered_clips(data, tmp_path, monkeypatch):
  """With SyncNet weights and a CAPP checkpoint configured, the rendered clips get Sc, SD and
  CAPP as `vasa_jax.evaluate` computes them, from each clip's frames and its own speech; a clip
  without a tracked face is left out of the means."""
  width = 0.125
  torch.manual_seed(0)
  torch.save(torch_syncnet.randomised(torch_syncnet.TorchSyncNet(width=width)).state_dict(),
             tmp_path / "syncnet.pth")
  convert_weights.convert(str(tmp_path / "syncnet.pth"), str(tmp_path / "syncnet.npz"),
                          syncnet_model.SyncNet(width=width))
  capp_config = capp_config_lib.get_config("tiny")  # 20-frame windows, log-mel audio
  capp = capp_model.CAPP.from_config(capp_config.model, capp_config.audio.num_mels)
  params = jax.jit(lambda rng: nn.meta.unbox(capp.init(rng, *[
      jnp.zeros(spec.shape) for spec in capp.example_inputs()])["params"]))(
          jax.random.key(1, impl="rbg"))
  capp_eval.save(str(tmp_path / "capp"), params, capp_config.model, capp_config.audio,
                 capp_config.fps)

  data_dir, _, split_records = data
  config = sample_config(data_dir)
  config.eval.update(syncnet=str(tmp_path / "syncnet.npz"), syncnet_width=width,
                     capp_checkpoint=str(tmp_path / "capp"), write_videos=False)
  task = motion.make_task(config, workdir=str(tmp_path))
  rendered = []

  def fake_track(frames, fps, tracker=None):  # pylint: disable=unused-argument
    """The first clip: a face box in the middle of every frame, a nodding head; the second:
    no face."""
    rendered.append(np.array(frames))
    if len(rendered) == 2:
      return tracking.TrackedClip(skip_reason="no_face")
    count = len(frames)
    grid = np.stack(np.meshgrid(np.linspace(16, 48, 17), np.linspace(20, 44, 4)), -1)
    landmarks = np.broadcast_to(grid.reshape(-1, 2)[:68], (count, 68, 2)).astype(np.float64)
    pitch = 5 * np.sin(np.arange(count) / 3)
    return tracking.TrackedClip(
        skip_reason=None, found=np.ones(count, bool), landmarks=landmarks,
        head_pose=np.stack([np.zeros(count), pitch, np.zeros(count)], -1),
        gaze=np.zeros((count, 2)), distance=np.ones(count))

  monkeypatch.setattr(tracking, "track", fake_track)
  writer = RecordingWriter()
  task.evaluate(initial_state(task, config), 3, writer)

  assert len(rendered) == 2
  frames = rendered[0]
  track = fake_track(frames, 25.0)
  rendered.pop()
  speech = (split_records["test"][0]["audio"][:CLIP_FRAMES * fake_motion.SAMPLES_PER_FRAME]
            / 32768.0)
  crops = sync_eval.crop_faces(frames, track.found, track.landmarks)
  scorer = sync_eval.SyncNetScorer(pretrained.load_syncnet(str(tmp_path / "syncnet.npz"),
                                                           width=width),
                                   syncnet_model.SyncNet(width=width))
  expected = scorer.score(crops.crops, sync_eval.clip_audio(mfcc.int16_samples(speech),
                                                            crops.first, crops.last))
  scalars = writer.scalars
  assert scalars["eval/sync_confidence"] == pytest.approx(expected.confidence, rel=1e-5)
  assert scalars["eval/sync_distance"] == pytest.approx(expected.distance, rel=1e-5)
  pose = capp_eval.pose_features(track.head_pose, track.landmarks, track.distance, 64, 64)
  expected_capp = capp_eval.CAPPScorer(str(tmp_path / "capp")).score(speech, pose)
  assert expected_capp is not None and -1.0 <= expected_capp <= 1.0
  assert scalars["eval/capp"] == pytest.approx(expected_capp, rel=1e-5)
