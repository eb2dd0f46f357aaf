"""CAPP (`configs/capp.py`, `vasa_jax.trainers.capp`, `vasa_jax.evaluators.capp`): pose features,
the training examples, the loss, learning on a fixed batch, a short run whose export the scorer
reads, and the scorer's refusal of parameters of another shape."""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import capp as capp_config
from vasa_jax.data import input_pipeline
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.evaluators import capp as capp_eval
from vasa_jax.trainers import capp as trainer
from vasa_jax.training import sharding


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Eight 1.6 s SynthTalk clips at 64 px (2 train speakers, 2 test speakers, 2 clips each)."""
  directory = tmp_path_factory.mktemp("synthtalk")
  synthtalk.main([f"--output_dir={directory}", "--num_speakers=4", "--clips_per_speaker=2",
                  "--resolution=64", "--min_seconds=1.6", "--max_seconds=1.6",
                  "--test_fraction=0.5", "--num_workers=1", "--seed=3"])
  return str(directory)


def tiny_config(data_dir):
  config = capp_config.get_config("tiny")
  config.data_dir = data_dir
  return config


def test_pose_features():
  landmarks = np.zeros((2, 68, 2))
  landmarks[0, :, 0], landmarks[0, :, 1] = 50.0, 30.0  # centre (50, 30) in a 100 x 200 frame
  landmarks[1, :34], landmarks[1, 34:] = [0.0, 0.0], [200.0, 100.0]  # centre (100, 50)
  pose = capp_eval.pose_features(np.array([[10.0, -20.0, 5.0], [0.0, 0.0, 0.0]]), landmarks,
                                 np.array([1.0, 1.1]), frame_height=100, frame_width=200)
  np.testing.assert_allclose(pose, [[1.0, -2.0, 0.5, -5.0, -4.0, 20.0],
                                    [0.0, 0.0, 0.0, 0.0, 0.0, 22.0]], rtol=1e-6)


def test_windows_and_starts():
  values = np.arange(12, dtype=np.float32)[:, None] ** 2  # [T, 1]
  windows = capp_eval.centred_windows(values, np.array([0, 5]), 3)
  np.testing.assert_allclose(windows[:, :, 0], [[-5 / 3, -2 / 3, 7 / 3], [-35 / 3, -2 / 3, 37 / 3]],
                             rtol=1e-5)
  assert capp_eval.window_starts(100, 75, hop=25).tolist() == [0, 25]
  assert capp_eval.window_starts(100, 75, hop=10, margin=4).tolist() == [4, 14]
  assert capp_eval.window_starts(74, 75).size == 0


def test_examples_are_windows_of_the_clip(data_dir):
  config = tiny_config(data_dir)
  reader = input_pipeline._RecordReader(  # pylint: disable=protected-access
      input_pipeline.ClipIndex.load(data_dir, "train"))
  record = reader.record(0, with_frames=False)
  featurizer = trainer.featurizer(config)
  pose = capp_eval.record_pose(record)
  audio = featurizer(record["audio"].astype(np.float32) / 32768.0)
  window = config.model.window
  candidates = np.arange(min(len(pose), len(audio)) - window + 1)
  pose_windows = capp_eval.centred_windows(pose, candidates, window)
  audio_windows = capp_eval.centred_windows(audio, candidates, window)
  sampler = trainer.CAPPSampler(reader, window, min_shift=1, max_shift=4, featurizer=featurizer,
                                num_shifted=3, num_scaled=2, log2_scale_range=(1.0, 2.0))
  shifts = []
  for seed in range(10):
    example = sampler(0, np.random.default_rng(seed))
    assert example["audio"].shape == (window, config.audio.num_mels)
    assert example["pose"].shape == (window, 6)
    assert example["negative_pose"].shape == (5, window, 6)
    assert example["has_negative"].tolist() == [True] * 5  # 40-frame clips: room for 3 shifts
    # Which windows: found by matching against every candidate start.
    [start] = [t for t in candidates if np.allclose(example["pose"], pose_windows[t])]
    [audio_start] = [t for t in candidates if np.allclose(example["audio"], audio_windows[t])]
    assert audio_start == start
    copies = [[t for t in candidates if np.allclose(negative, pose_windows[t])][0]
              for negative in example["negative_pose"][:3]]
    assert len(set(copies)) == 3 and all(1 <= abs(t - start) <= 4 for t in copies)
    shifts += [t - start for t in copies]
    for scaled in example["negative_pose"][3:]:
      factor = np.sum(scaled * example["pose"]) / np.sum(example["pose"] ** 2)
      np.testing.assert_allclose(scaled, factor * example["pose"], rtol=1e-5, atol=1e-6)
      assert 1.0 - 1e-5 <= abs(np.log2(factor)) <= 2.0 + 1e-5
  assert min(shifts) < 0 < max(shifts)
  # A clip without room for a shift: its shifted copies are masked, the scaled ones are not.
  long_shift = trainer.CAPPSampler(reader, window, min_shift=30, max_shift=40,
                                   featurizer=featurizer, num_shifted=2, num_scaled=1)
  assert long_shift(0, np.random.default_rng(0))["has_negative"].tolist() == [False, False, True]


def test_clip_loss():
  audio = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  pose = jnp.array([[0.6, 0.8], [0.0, 1.0]])
  negatives = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]])  # [B, K, E]
  scale = jnp.array(2.0)
  loss, logits = trainer.clip_loss(audio, pose, negatives, jnp.array([[True, True],
                                                                      [False, True]]), scale)
  np.testing.assert_allclose(logits, [[1.2, 0.0], [1.6, 2.0]], rtol=1e-6)

  def cross_entropy(row, label):
    return -row[label] + np.log(np.sum(np.exp(row)))

  # Audio 0 also meets both its negatives (logits 2, 0); audio 1 only its second (logit -2).
  audio_to_pose = cross_entropy(np.array([1.2, 0.0, 2.0, 0.0]), 0) + cross_entropy(
      np.array([1.6, 2.0, -2.0]), 1)
  pose_to_audio = cross_entropy(np.array([1.2, 1.6]), 0) + cross_entropy(np.array([0.0, 2.0]), 1)
  assert float(loss) == pytest.approx(0.25 * (audio_to_pose + pose_to_audio), rel=1e-5)


def test_encoders_learn_a_fixed_batch(data_dir):
  config = tiny_config(data_dir)
  config.batch_size = 4  # the 4 training clips, one window each
  config.data.num_scaled = 1
  iterator = trainer.make_iterator(config, "train", seed=0, process_index=0, process_count=1)
  batch = jax.tree.map(jnp.asarray, next(iterator))
  model = trainer.make_model(config)
  optimizer = optax.adam(3e-3)
  state = jax.jit(lambda rng: flax.core.meta.unbox(trainer.make_init_state(model, optimizer)(
      rng)))(jax.random.key(0, impl="rbg"))
  step = jax.jit(trainer.make_train_step(model, optimizer, config.data.num_shifted))
  first = None
  for _ in range(40):
    state, metrics = step(state, batch, None, None)
    first = float(metrics["loss"]) if first is None else first
  assert float(metrics["loss"]) < 0.3 * first
  assert float(metrics["retrieval_top1"]) == 1.0
  # The matched pose is nearer the speech than its shifted and scaled copies.
  assert float(metrics["cosine/matched"]) > max(float(metrics["cosine/shifted"]),
                                                float(metrics["cosine/scaled"]))


def test_a_short_run_exports_what_the_scorer_reads(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.total_steps, config.eval_every_steps = 2, 2
  state = trainer.train_and_evaluate(config, str(tmp_path),
                                     sharding.create_mesh(config.mesh, jax.devices()[:1]))
  scorer = capp_eval.CAPPScorer(str(tmp_path))
  record = next(input_pipeline.split_records(data_dir, "test", [0], with_frames=False))
  waveform = record["audio"].astype(np.float32) / 32768.0
  pose = capp_eval.record_pose(record)
  score = scorer.score(waveform, pose, hop=10)
  # The formula, computed here from the trained parameters: windows at 0, 10, 20 of 40 frames.
  model = trainer.make_model(config)
  audio = trainer.featurizer(config)(waveform)
  starts = np.array([0, 10, 20])
  audio_embeddings, pose_embeddings, _ = model.apply(
      {"params": state.params}, capp_eval.centred_windows(audio, starts, 20),
      capp_eval.centred_windows(pose, starts, 20))
  expected = np.mean(np.sum(np.asarray(audio_embeddings) * np.asarray(pose_embeddings), -1))
  assert score == pytest.approx(float(expected), abs=1e-5)
  assert scorer.score(waveform[:16_000 * 19 // 25], pose[:19]) is None  # shorter than a window
  settings = json.loads((tmp_path / capp_eval.CONFIG_FILE).read_text())
  assert settings["model"]["window"] == 20 and settings["audio"]["features"] == "log_mel"


def test_scorer_refuses_parameters_of_another_shape(data_dir, tmp_path):
  config = tiny_config(data_dir)
  model = trainer.make_model(config)
  params = jax.jit(lambda rng: flax.core.meta.unbox(model.init(rng, *[
      jnp.zeros(spec.shape) for spec in model.example_inputs()])["params"]))(
          jax.random.key(0, impl="rbg"))
  params["pose_encoder"]["input"]["kernel"] = jnp.zeros((5, 32))
  capp_eval.save(str(tmp_path), params, config.model, config.audio, config.fps)
  with pytest.raises(ValueError, match=r"pose_encoder/input/kernel has shape \(5, 32\)"):
    capp_eval.CAPPScorer(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="lacks"):
    capp_eval.CAPPScorer(str(tmp_path / "nowhere"))
