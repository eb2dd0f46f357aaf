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
  record = reader[0]
  coefficients = mfcc.mfcc(record["audio"]).T
  track = sync_eval.crop_track(record["annotations"]["face_found"],
                               record["annotations"]["landmarks"])
  frames = [media.decode_jpeg(frame) for frame in record["frames"]]
  labels = []
  for seed in range(12):
    sampler = trainer.SyncNetSampler(reader, max_offset=15, min_offset=1, matched_fraction=0.5)
    example = sampler(0, np.random.default_rng(seed))
    assert example["lips"].shape == (5, 224, 224, 3) and example["lips"].dtype == np.uint8
    assert example["mfcc"].shape == (13, 20)
    labels.append(float(example["label"]))
    # Which lip window and audio window: found by matching against every candidate.
    starts = [t for t in range(len(frames) - 4)
              if np.array_equal(example["lips"][0], sync_eval.crop_frame(
                  frames[t], track.half_size[t], track.centre_y[t], track.centre_x[t]))]
    audio_starts = [t for t in range((coefficients.shape[1] - 20) // 4 + 1)
                    if np.allclose(example["mfcc"], coefficients[:, 4 * t:4 * t + 20])]
    assert len(starts) >= 1 and len(audio_starts) == 1
    shift = audio_starts[0] - starts[0]
    if example["label"] == 1:
      assert shift == 0
    else:
      assert 1 <= abs(shift) <= 15
  assert 0 < sum(labels) < len(labels)


def test_contrastive_loss():
  lips = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
  audio = jnp.array([[3.0, 4.0], [3.0, 4.0], [6.0, 8.0]])  # distances 5, 5, 10
  labels = jnp.array([1.0, 0.0, 0.0])
  loss, distance = trainer.contrastive_loss(lips, audio, labels, margin=7.0)
  np.testing.assert_allclose(distance, [5.0, 5.0, 10.0], rtol=1e-6)
  # Matched: d^2 = 25; offset within the margin: (7 - 5)^2 = 4; beyond it: 0.
  assert float(loss) == pytest.approx((25.0 + 4.0 + 0.0) / 3)


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
  assert {"loss", "distance/matched", "distance/offset", "eval/pair_accuracy"} <= logged
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
