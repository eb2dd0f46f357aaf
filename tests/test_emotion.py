"""The emotion classifier (vasa_jax/models/emotion.py) and its converter against a PyTorch
re-creation of HSEmotion's EfficientNet-B0 (tests/torch_efficientnet.py) with random weights."""

import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from data_prep import convert_weights
from tests import torch_efficientnet
from vasa_jax.inference import emotion_control
from vasa_jax.models import emotion
from vasa_jax.models import pretrained


def _torch_model(num_outputs: int, seed: int = 0) -> torch.nn.Module:
  generator = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  model = torch_efficientnet.TorchEfficientNetB0(num_outputs)
  with torch.no_grad():
    torch_efficientnet.randomize(model, generator)
  return model.eval()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """(torch model, converted .npz path, state-dict path) of a random "enet_b0_8_va_mtl"."""
  directory = tmp_path_factory.mktemp("emotion")
  model = _torch_model(emotion.NUM_EMOTIONS + 2)  # 8 expressions, valence, arousal
  torch.save(model.state_dict(), directory / "enet_b0_8_va_mtl_state.pt")
  convert_weights.convert(str(directory / "enet_b0_8_va_mtl_state.pt"),
                          str(directory / "emotion.npz"), pretrained.MODEL_KINDS["emotion"])
  return model, directory / "emotion.npz", directory / "enet_b0_8_va_mtl_state.pt"


def test_logits_match_torch(release):
  model, weights_path, _ = release
  rng = np.random.default_rng(0)
  crops = rng.uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
  crops[1] = np.linspace(0, 1, 224)[None, :, None]  # a horizontal ramp
  mean, std = np.array(emotion.IMAGENET_MEAN), np.array(emotion.IMAGENET_STD)
  normalised = ((crops - mean) / std).astype(np.float32)
  with torch.no_grad():
    expected = model(torch.from_numpy(normalised.transpose(0, 3, 1, 2))).numpy()
  variables = pretrained.load_emotion(str(weights_path))
  logits = np.asarray(jax.jit(emotion.EmotionNet().apply)(variables, emotion.preprocess(crops)))
  assert logits.shape == (2, emotion.NUM_EMOTIONS)
  assert np.abs(expected[0, :8] - expected[1, :8]).max() > 0.5  # the images' logits differ
  scale = np.abs(expected[:, :8]).max(axis=1, keepdims=True)  # [2, 1]
  assert np.all(np.abs(logits - expected[:, :8]) <= 1e-4 * np.maximum(scale, 1.0)), (
      np.abs(logits - expected[:, :8]).max(axis=1), scale)
  probabilities = np.asarray(emotion.scores(emotion.EmotionNet(), variables, crops))
  np.testing.assert_allclose(probabilities, jax.nn.softmax(expected[:, :8], axis=-1), atol=1e-4)
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)


def test_preprocess_resizes_crops_of_any_size():
  crops = np.full((1, 96, 96, 3), 0.5, np.float32)
  inputs = np.asarray(emotion.preprocess(crops))
  assert inputs.shape == (1, 224, 224, 3)
  np.testing.assert_allclose(inputs[0, 100, 100],
                             (0.5 - np.array(emotion.IMAGENET_MEAN)) / np.array(emotion.IMAGENET_STD),
                             atol=1e-6)


def test_plain_linear_classifier_is_read_as_hsemotions(tmp_path):
  model = _torch_model(emotion.NUM_EMOTIONS, seed=1)
  state = model.state_dict()
  state["classifier.weight"] = state.pop("classifier.0.weight")
  state["classifier.bias"] = state.pop("classifier.0.bias")
  torch.save(state, tmp_path / "linear.pt")
  tensors = convert_weights.convert(str(tmp_path / "linear.pt"), str(tmp_path / "linear.npz"),
                                    pretrained.MODEL_KINDS["emotion"])
  np.testing.assert_array_equal(tensors["classifier.0.weight"],
                                model.state_dict()["classifier.0.weight"].numpy())


def test_loader_and_converter_refuse_other_files(release, tmp_path):
  model, weights_path, state_path = release
  with np.load(weights_path) as archive:
    tensors = dict(archive)
  tensors["blocks.2.1.conv_dw.weight"] = np.zeros((240, 1, 3, 3), np.float32)
  np.savez(tmp_path / "bad.npz", **tensors)
  with pytest.raises(ValueError, match=r"'blocks\.2\.1\.conv_dw\.weight' has shape "
                     r"\(240, 1, 3, 3\) in the file but the model needs \(240, 1, 5, 5\)"):
    pretrained.load_emotion(str(tmp_path / "bad.npz"))
  # A whole pickled model (how HSEmotion releases its .pt files) is not unpickled.
  torch.save(model, tmp_path / "whole_model.pt")
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.convert_weights", "--kind=emotion",
       f"--input={tmp_path / 'whole_model.pt'}", f"--output={tmp_path / 'out.npz'}"],
      capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "whole pickled model is refused" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "out.npz").exists()
  # A 7-class model (HSEmotion's enet_b2_7 layout) is refused naming the classifier.
  state = torch.load(state_path, weights_only=True)
  state["classifier.0.weight"] = state["classifier.0.weight"][:7]
  torch.save(state, tmp_path / "seven.pt")
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.convert_weights", "--kind=emotion",
       f"--input={tmp_path / 'seven.pt'}", f"--output={tmp_path / 'out.npz'}"],
      capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "'classifier.0.weight' has shape (7, 1280) in the file but the model needs (8, 1280)" in (
      result.stderr)
  assert not (tmp_path / "out.npz").exists()


def test_emotion_control_names_and_scores():
  classes = emotion.EMOTION_CLASSES
  for name, emotion_class in emotion_control.NAMES.items():
    scores = emotion_control.parse_emotion(name)
    assert scores[classes.index(emotion_class)] == 1.0 and scores.sum() == 1.0
  np.testing.assert_allclose(emotion_control.parse_emotion("1, 0, 0, 0, 3, 0, 0, 0"),
                             [0.25, 0, 0, 0, 0.75, 0, 0, 0])
  np.testing.assert_array_equal(emotion_control.parse_emotion([0, 0, 0, 0, 0, 0, 2, 0]),
                                np.eye(8)[classes.index("sadness")])
  for value, message in [("joyful", "'joyful' is neither a name"),
                         ("0.5,0.5", "has 2 score"),
                         ("0,0,0,0,1,0,0,-1", "has score -1; scores must be finite and >= 0"),
                         ("0,0,0,0,inf,0,0,0", "has score inf"),
                         ("0,0,0,0,0,0,0,0", "has no positive score")]:
    with pytest.raises(ValueError, match=message):
      emotion_control.parse_emotion(value)
