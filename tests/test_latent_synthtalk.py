"""Tests for experiments/latent_synthtalk.py: its dynamics scores and re-scoring saved weights."""

import json

import flax
import jax
import numpy as np
import pytest

from configs import latent as latent_config
from tests import experiment_scripts
from vasa_jax.losses import latent as latent_losses
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.training import checkpoint

def test_dynamics_scores_region_oracle_and_baseline():
  check = experiment_scripts.load("latent_synthtalk")
  rng = np.random.default_rng(0)
  truth_a = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  truth_swap = truth_a.copy()
  truth_swap[:, 5:9, 4:10] += 0.5              # the "mouth": a 4 x 6 box the swap changes
  truth_swap[:, 0, 0] += 0.01                  # below the threshold: not part of the region
  reconstruction = truth_a + rng.normal(0, 0.1, truth_a.shape).astype(np.float32)

  region = check.dynamics_region(truth_a, truth_swap)
  assert region.shape == (2, 16, 16, 1)
  # The box grown by 2 px in city-block distance: 24 + 4 * (4 + 6) + 4 corner pixels.
  np.testing.assert_array_equal(region.sum(axis=(1, 2, 3)), [68, 68])
  assert region[0, 0, 0, 0] == 0 and region[0, 6, 6, 0] == 1 and region[0, 3, 6, 0] == 1

  ignoring = check.dynamics_scores(reconstruction, reconstruction, truth_a, truth_swap)
  for suffix in ("", "_in_region"):
    np.testing.assert_array_equal(ignoring["dynamics_transfer" + suffix],
                                  ignoring["dynamics_no_transfer_baseline" + suffix])
    # The swap's change (0.5) dwarfs the reconstruction noise (0.1): the oracle wins, by more
    # inside the region than over the whole frame.
    assert np.all(ignoring["dynamics_oracle" + suffix] >
                  ignoring["dynamics_no_transfer_baseline" + suffix] + 1.0)
  gain = lambda scores, suffix: (scores["dynamics_oracle" + suffix] -
                                 scores["dynamics_no_transfer_baseline" + suffix])
  assert np.all(gain(ignoring, "_in_region") > gain(ignoring, "") + 3.0)

  exact = reconstruction + (truth_swap - truth_a)
  drawing = check.dynamics_scores(reconstruction, exact, truth_a, truth_swap)
  np.testing.assert_allclose(drawing["dynamics_transfer"], drawing["dynamics_oracle"], rtol=1e-6)
  np.testing.assert_allclose(drawing["dynamics_transfer_in_region"],
                             drawing["dynamics_oracle_in_region"], rtol=1e-6)

  # The change a swap makes: a pure colour shift of the frame is all colour, a zero-mean
  # pattern none; its PSNR against the reconstruction is that of the shift.
  shift = np.array([0.1, -0.2, 0.05], np.float32)
  recoloured = check.dynamics_scores(reconstruction, reconstruction + shift, truth_a, truth_swap)
  np.testing.assert_allclose(recoloured["dynamics_change_colour_energy"],
                             recoloured["dynamics_change_energy"], rtol=1e-5)
  np.testing.assert_allclose(recoloured["dynamics_change"],
                             10 * np.log10(4 / np.mean(np.square(shift))), rtol=1e-5)
  checkerboard = np.indices((16, 16)).sum(axis=0) % 2 * 0.2 - 0.1  # [16, 16], mean 0
  patterned = check.dynamics_scores(reconstruction, reconstruction + checkerboard[..., None],
                                    truth_a, truth_swap)
  np.testing.assert_allclose(patterned["dynamics_change_energy"], 0.01, rtol=1e-5)
  np.testing.assert_allclose(patterned["dynamics_change_colour_energy"], 0.0, atol=1e-12)

  everywhere = np.ones((2, 16, 16, 1), np.float32)
  np.testing.assert_allclose(latent_losses.psnr(reconstruction, truth_swap, everywhere),
                             latent_losses.psnr(reconstruction, truth_swap), rtol=1e-6)
  empty = np.zeros((1, 16, 16, 1), np.float32)
  assert np.isnan(latent_losses.psnr(truth_a[:1], truth_swap[:1], empty)[0])


@pytest.mark.slow
def test_rescoring_saved_weights_and_refusing_wrong_ones(tmp_path):
  check = experiment_scripts.load("latent_synthtalk")
  config = latent_config.get_config("tiny")
  model = autoencoder_lib.FaceAutoencoder.from_config(config.model)
  image = np.zeros((1, config.image_size, config.image_size, 3), np.float32)
  params = flax.linen.meta.unbox(model.init(jax.random.key(1), image, image)["params"])
  weights = tmp_path / "ema_params.msgpack"
  weights.write_bytes(flax.serialization.to_bytes(params))
  args = [f"--workdir={tmp_path}", "--variant=tiny", "--num_speakers=10",
          "--clips_per_speaker=1", "--num_pairs=4"]

  check.main(args + [f"--params={weights}"])
  report = json.loads((tmp_path / "latent_synthtalk_rescored.json").read_text())
  assert report["scored_params"] == str(weights) and report["training_history"] == []
  assert (tmp_path / "latent_synthtalk_rescored.png").exists()
  for split in ("held_out", "seen_speakers_held_out_frames"):
    for pairs in ("same_speaker_pairs", "cross_speaker_pairs"):
      scores = report[split][pairs]
      assert scores["num_pairs"] == 2 and scores["dynamics_region_pixels"] > 0
      assert all(np.isfinite(value) for value in scores.values())
  # Re-scoring reads the weights given: other weights give other scores.
  other = flax.linen.meta.unbox(model.init(jax.random.key(2), image, image)["params"])
  weights.write_bytes(flax.serialization.to_bytes(other))
  check.main(args + [f"--params={weights}"])
  rescored = json.loads((tmp_path / "latent_synthtalk_rescored.json").read_text())
  assert (rescored["held_out"]["reconstruction_psnr"] !=
          report["held_out"]["reconstruction_psnr"])

  with pytest.raises(checkpoint.CheckpointError, match=r"does not fit the model: .* has shape"):
    check.main(args + [f"--params={weights}", "--set", "model.dyn_dim=5"])
  weights.write_bytes(b"not msgpack")
  with pytest.raises(checkpoint.CheckpointError, match="not a flax.serialization msgpack"):
    check.main(args + [f"--params={weights}"])
  with pytest.raises(FileNotFoundError, match="no such file"):
    check.main(args + [f"--params={tmp_path / 'missing.msgpack'}"])
