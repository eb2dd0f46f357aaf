"""SyncNet (LSE-C / LSE-D) against syncnet_python re-created in PyTorch, MFCCs against
python_speech_features, the weight converter and the face crop."""

import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import python_speech_features
import torch

from data_prep import convert_weights
from tests import torch_syncnet
from vasa_jax.evaluators import mfcc
from vasa_jax.evaluators import syncnet as sync_eval
from vasa_jax.models import pretrained
from vasa_jax.models import syncnet

SMALL_WIDTH = 0.125


def relative_error(value, reference):
  return abs(value - reference) / abs(reference)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """(torch S, converted .npz path, .model path): a full-size random syncnet_v2.model."""
  torch.manual_seed(0)
  model = torch_syncnet.randomised(torch_syncnet.TorchSyncNet())
  directory = tmp_path_factory.mktemp("syncnet")
  # The released file is a plain state dict in torch's legacy (pre-1.6) format.
  torch.save(model.state_dict(), directory / "syncnet_v2.model",
             _use_new_zipfile_serialization=False)
  convert_weights.convert(str(directory / "syncnet_v2.model"), str(directory / "syncnet.npz"),
                          pretrained.MODEL_KINDS["syncnet"])
  return model, str(directory / "syncnet.npz"), directory / "syncnet_v2.model"


@pytest.fixture(scope="module")
def small_release(tmp_path_factory):
  """(torch S at 1/8 width, its Flax variables) for end-to-end scoring."""
  torch.manual_seed(1)
  model = torch_syncnet.randomised(torch_syncnet.TorchSyncNet(width=SMALL_WIDTH), seed=2)
  directory = tmp_path_factory.mktemp("small_syncnet")
  torch.save(model.state_dict(), directory / "small.model")
  flax_model = syncnet.SyncNet(width=SMALL_WIDTH)
  convert_weights.convert(str(directory / "small.model"), str(directory / "small.npz"),
                          flax_model)
  return model, pretrained.load_syncnet(str(directory / "small.npz"), width=SMALL_WIDTH)


def talking_clip(num_frames=34, seed=0):
  """Smooth random 224 px RGB frames and int16 speech-like noise of the same length."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (num_frames, 8, 8, 3))
  frames = np.stack([sync_eval.resize_bilinear(frame.astype(np.uint8), 224) for frame in coarse])
  envelope = np.repeat(rng.uniform(0.05, 1.0, num_frames), sync_eval.SAMPLES_PER_FRAME)
  audio = mfcc.int16_samples(0.3 * envelope * rng.normal(size=envelope.shape))
  return frames, audio


def test_mfcc_equals_python_speech_features():
  rng = np.random.default_rng(0)
  for length in (150, 400, 401, 561, 16_000, 23_777):
    audio = (rng.normal(size=length) * 4000).astype(np.int16)
    audio[:200] = 0  # digital silence: the log floors
    expected = python_speech_features.mfcc(audio, 16000)
    computed = mfcc.mfcc(audio)
    assert computed.shape == expected.shape == (mfcc.num_mfcc_frames(length), 13)
    np.testing.assert_allclose(computed, expected, rtol=1e-9, atol=1e-9)
  np.testing.assert_array_equal(mfcc.int16_samples(np.array([-1.2, -1.0, 0.5, 0.99999, 1.0])),
                                [-32768, -32768, 16384, 32767, 32767])


def test_syncnet_matches_torch_at_full_size(release):
  torch_model, weights_path, _ = release
  model = syncnet.SyncNet()
  variables = pretrained.load_syncnet(weights_path)
  rng = np.random.default_rng(0)
  mfccs = rng.normal(0, 5, (2, 13, 20)).astype(np.float32)
  lips = rng.uniform(0, 255, (2, 5, 224, 224, 3)).astype(np.float32)
  audio_embedding, lip_embedding = model.apply(variables, mfccs, lips)
  with torch.no_grad():
    torch_audio = torch_model.forward_aud(torch.from_numpy(mfccs[:, None]))
    torch_lips = torch_model.forward_lip(torch.from_numpy(lips).permute(0, 4, 1, 2, 3))
  for flax_value, torch_value in ((audio_embedding, torch_audio), (lip_embedding, torch_lips)):
    torch_value = torch_value.numpy()
    assert flax_value.shape == torch_value.shape == (2, 1024)
    assert np.abs(np.asarray(flax_value) - torch_value).max() <= 1e-4 * np.abs(torch_value).max()
  params = sum(leaf.size for leaf in jax.tree.leaves(nn.unbox(variables["params"])))
  assert params == sum(p.numel() for p in torch_model.parameters())


def test_scores_equal_the_reference_evaluate(small_release):
  torch_model, variables = small_release
  scorer = sync_eval.SyncNetScorer(variables, syncnet.SyncNet(width=SMALL_WIDTH), batch_size=8)
  for seed, num_frames in ((0, 34), (1, 27)):
    frames, audio = talking_clip(num_frames, seed)
    audio = audio[:-100]  # the last frame has too little audio: one window fewer
    scores = scorer.score(frames, audio)
    offset, confidence, distance = torch_syncnet.reference_evaluate(torch_model, frames, audio)
    assert scores.num_windows == num_frames - 6
    assert scores.offset == offset
    assert relative_error(scores.distance, distance) < 1e-3
    assert relative_error(scores.confidence, confidence) < 1e-3
    assert scores.mean_distances.shape == (31,)


def test_offset_scores_find_a_known_shift():
  rng = np.random.default_rng(3)
  lips = rng.normal(size=(60, 16))
  for shift in (-4, 0, 3):
    # The audio of window t matches the lips of window t - shift: the sound comes `shift`
    # windows late, which syncnet_python reports as offset = -shift.
    audio = np.roll(lips, shift, axis=0) + 0.05 * rng.normal(size=lips.shape)
    scores = sync_eval.offset_scores(lips, audio)
    assert scores.offset == -shift
    assert scores.confidence > 1.0
    assert scores.distance == pytest.approx(scores.mean_distances.min())
  with pytest.raises(ValueError, match="matching"):
    sync_eval.offset_scores(lips, lips[:5])


def test_too_short_clips_are_refused(small_release):
  _, variables = small_release
  scorer = sync_eval.SyncNetScorer(variables, syncnet.SyncNet(width=SMALL_WIDTH))
  frames, audio = talking_clip(5)
  with pytest.raises(ValueError, match="too short"):
    scorer.score(frames, audio)


def test_resize_matches_torch_bilinear_without_antialiasing():
  rng = np.random.default_rng(0)
  for height, width in ((56, 61), (300, 250)):
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    resized = sync_eval.resize_bilinear(image, 224)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None].double(), size=(224, 224),
        mode="bilinear", align_corners=False, antialias=False)[0].permute(1, 2, 0).numpy()
    assert resized.shape == (224, 224, 3)
    assert np.abs(resized - expected).max() <= 0.5 + 1e-9


def test_face_crop_follows_run_pipeline():
  height, width, num_frames = 300, 320, 20
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  frame = np.stack([rows % 256, cols % 256, (rows + cols) % 256], -1).astype(np.uint8)
  frames = np.repeat(frame[None], num_frames, axis=0)
  square = np.array([[100.0, 100.0], [140.0, 100.0], [140.0, 140.0], [100.0, 140.0]])
  landmarks = np.repeat(square[None], num_frames, axis=0)
  landmarks[9] += 60.0  # one jumpy frame: the 13-frame median filter removes it
  found = np.ones(num_frames, bool)
  found[[0, 1, 15]] = False  # before the first face: cut; inside: interpolated
  crops = sync_eval.crop_faces(frames, found, landmarks)
  assert (crops.first, crops.last) == (2, num_frames - 1)
  assert crops.crops.shape == (num_frames - 2, 224, 224, 3)
  # Box half size 20, centre (120, 120): rows 120 - 20 .. 120 + 20 * 1.8, cols 120 +- 20 * 1.4.
  expected = sync_eval.resize_bilinear(frame[100:156, 92:148], 224)
  middle = 10 - crops.first
  for index in (middle - 1, middle, middle + 1):  # the jump at frame 9 is filtered away
    np.testing.assert_array_equal(crops.crops[index], expected)
  # A face at the border: the outside is filled with grey 110.
  corner = np.repeat(np.array([[0.0, 0.0], [40.0, 40.0]])[None], num_frames, axis=0)
  crops = sync_eval.crop_faces(frames, np.ones(num_frames, bool), corner)
  assert (crops.crops[8, :20, :20] == 110).all()
  with pytest.raises(ValueError, match="no face"):
    sync_eval.crop_faces(frames, np.zeros(num_frames, bool), landmarks)


def test_loader_and_converter_refuse_other_files(release, tmp_path):
  _, weights_path, model_path = release
  with np.load(weights_path) as archive:
    tensors = dict(archive)
  tensors["netcnnlip.4.weight"] = np.zeros((256, 96, 1, 3, 3), np.float32)
  np.savez(tmp_path / "bad.npz", **tensors)
  with pytest.raises(ValueError, match=r"'netcnnlip\.4\.weight' has shape \(256, 96, 1, 3, 3\) "
                     r"in the file but the model needs \(256, 96, 1, 5, 5\)"):
    pretrained.load_syncnet(str(tmp_path / "bad.npz"))
  with pytest.raises(FileNotFoundError, match="nowhere.npz"):
    pretrained.load_syncnet(str(tmp_path / "nowhere.npz"))
  # The command line: a 1/8-width file is not the released network.
  small = torch_syncnet.TorchSyncNet(width=SMALL_WIDTH)
  torch.save(small.state_dict(), tmp_path / "small.model")
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.convert_weights", "--kind=syncnet",
       f"--input={tmp_path / 'small.model'}", f"--output={tmp_path / 'out.npz'}"],
      capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "'netcnnaud.1.running_mean' has shape (8,) in the file but the model needs (64,)" in (
      result.stderr)
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "out.npz").exists()
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.convert_weights", "--kind=syncnet",
       f"--input={model_path}", f"--output={tmp_path / 'good.npz'}"],
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert "wrote" in result.stdout
