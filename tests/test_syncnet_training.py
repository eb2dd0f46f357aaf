"""`configs/syncnet.py` / `vasa_jax.trainers.syncnet`: the examples, the loss, a short run and its
exported weights; experiments/syncnet_synthtalk.py's audio shift."""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import syncnet as syncnet_config
from tests import experiment_scripts
from vasa_jax.data import input_pipeline
from vasa_jax.data import media
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.evaluators import mfcc
from vasa_jax.evaluators import syncnet as sync_eval
from vasa_jax.models import pretrained
from vasa_jax.trainers import syncnet as trainer
from vasa_jax.training import loop
from vasa_jax.training import sharding

WIDTH = 0.0625


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Four 1.6 s SynthTalk clips at 64 px (2 train speakers, 2 test speakers)."""
  directory = tmp_path_factory.mktemp("synthtalk")
  synthtalk.main([f"--output_dir={directory}", "--num_speakers=4", "--clips_per_speaker=1",
                  "--resolution=64", "--min_seconds=1.6", "--max_seconds=1.6",
                  "--test_fraction=0.5", "--num_workers=1", "--seed=2"])
  return str(directory)


def test_examples_are_the_evaluators_inputs(data_dir):
  reader = input_pipeline._RecordReader(  # pylint: disable=protected-access
      input_pipeline.ClipIndex.load(data_dir, "train"))
  record = reader.record(0)
  coefficients = mfcc.mfcc(record["audio"]).T
  track = sync_eval.crop_track(record["annotations"]["face_found"],
                               record["annotations"]["landmarks"])
  frames = [media.decode_jpeg(frame) for frame in record["frames"]]
  audio_windows = (coefficients.shape[1] - 20) // 4 + 1
  silent_windows = 0
  for seed in range(12):
    sampler = trainer.SyncNetSampler(reader, max_offset=15, lip_windows=3)
    example = sampler(0, np.random.default_rng(seed))
    assert example["lips"].shape == (3, 5, 224, 224, 3) and example["lips"].dtype == np.uint8
    assert example["mfcc"].shape == (30 + 3, 13, 20)
    # Which frames: found by matching against every candidate; the lip windows are consecutive.
    starts = [t for t in range(len(frames) - 6)
              if np.array_equal(example["lips"][0, 0], sync_eval.crop_frame(
                  frames[t], track.half_size[t], track.centre_y[t], track.centre_x[t]))]
    assert len(starts) >= 1
    start = starts[0]
    for window in range(3):
      for frame in range(5):
        t = start + window + frame
        np.testing.assert_array_equal(example["lips"][window, frame], sync_eval.crop_frame(
            frames[t], track.half_size[t], track.centre_y[t], track.centre_x[t]))
    # Audio window j is frame start - 15 + j's: lip window i's candidates are i .. i + 30.
    for index in range(33):
      mfcc_window = example["mfcc"][index]
      audio_start = start - 15 + index
      if 0 <= audio_start < audio_windows:  # the clip's own audio window
        np.testing.assert_allclose(mfcc_window,
                                   coefficients[:, 4 * audio_start:4 * audio_start + 20],
                                   rtol=1e-5, atol=1e-4)
      elif audio_start <= -6:  # wholly before the clip: silence (log energy of float eps)
        np.testing.assert_allclose(mfcc_window[0], np.log(np.finfo(float).eps), rtol=1e-6)
        silent_windows += 1
  assert silent_windows > 0


def test_candidates_are_each_lip_windows_offsets():
  audio = jnp.arange(2 * (2 * 2 + 3), dtype=jnp.float32).reshape(2, 7, 1)  # B 2, K 2, L 3
  candidates = trainer.candidate_embeddings(audio, lip_windows=3)
  assert candidates.shape == (6, 5, 1)
  np.testing.assert_array_equal(candidates[4, :, 0], [8, 9, 10, 11, 12])  # example 1, window 1


def test_offset_loss_ranks_the_matched_window_against_offsets_and_zero():
  lips = jnp.array([[3.0, 4.0]])  # distance 5 to the zero embedding
  audio = jnp.array([[[3.0, 6.0], [3.0, 4.5], [0.0, 4.0]]])  # distances 2, 0.5, 3; matched: 0.5
  loss, distance = trainer.offset_loss(lips, audio, temperature=0.5)
  np.testing.assert_allclose(distance, [[2.0, 0.5, 3.0, 5.0]], rtol=1e-5)
  logits = -np.array([2.0, 0.5, 3.0, 5.0]) / 0.5
  expected = -(logits[1] - np.log(np.sum(np.exp(logits))))
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  metrics = trainer.distance_metrics(distance)
  assert float(metrics["offset_accuracy"]) == 1.0
  assert float(metrics["distance/matched"]) == pytest.approx(0.5)
  assert float(metrics["distance/offset"]) == pytest.approx(2.5)
  assert float(metrics["distance/zero"]) == pytest.approx(5.0)
  # Lips nearer the zero embedding than the matched window: the loss rises, the pick is wrong.
  far_loss, far_distance = trainer.offset_loss(lips, audio + 10.0, temperature=0.5)
  assert float(far_loss) > float(loss)
  assert float(trainer.distance_metrics(far_distance)["offset_accuracy"]) == 0.0


@pytest.mark.slow
def test_a_short_run_exports_weights_the_evaluator_loads(data_dir, tmp_path):
  config = syncnet_config.get_config("cpu")
  config.data_dir, config.total_steps, config.batch_size = data_dir, 2, 2
  config.model.width, config.log_every_steps, config.eval_every_steps = WIDTH, 1, 2
  workdir = tmp_path / "run"
  writes = []
  with mock.patch.object(loop, "create_writer", lambda _: RecordingWriter(writes)):
    state = trainer.train_and_evaluate(config, str(workdir),
                                       sharding.create_mesh(config.mesh, jax.devices()[:1]))
  assert int(state.step) == 2
  logged = {key for _, scalars in writes for key in scalars}
  assert {"loss", "distance/matched", "distance/offset", "distance/zero", "offset_accuracy",
          "eval/loss", "eval/offset_accuracy"} <= logged
  assert all(np.isfinite(value) for _, scalars in writes for value in scalars.values())
  variables = pretrained.load_syncnet(str(workdir / trainer.WEIGHTS_FILE), width=WIDTH)
  # The file holds the trained state, BatchNorm running statistics (updated by training) too.
  np.testing.assert_array_equal(variables["batch_stats"]["netcnnlip_1"]["mean"],
                                np.asarray(state.batch_stats["netcnnlip_1"]["mean"]))
  assert not np.allclose(variables["batch_stats"]["netcnnlip_1"]["mean"], 0.0)
  np.testing.assert_array_equal(variables["params"]["netfclip_3"]["kernel"],
                                np.asarray(state.params["netfclip_3"]["kernel"]))


class RecordingWriter:
  """A metric writer keeping (step, scalars) in memory."""

  def __init__(self, writes):
    self.writes = writes

  def write_scalars(self, step, scalars):
    self.writes.append((step, dict(scalars)))

  def close(self):
    pass


def test_experiment_shifts_audio_by_whole_frames():
  experiment = experiment_scripts.load("syncnet_synthtalk")
  audio = np.arange(1, 3201, dtype=np.int16)  # 5 frames of 640 samples
  later = experiment.shift_audio(audio, 2)
  assert len(later) == len(audio) and (later[:1280] == 0).all()
  np.testing.assert_array_equal(later[1280:], audio[:-1280])
  earlier = experiment.shift_audio(audio, -1)
  np.testing.assert_array_equal(earlier[:-640], audio[640:])
  assert (earlier[-640:] == 0).all()
