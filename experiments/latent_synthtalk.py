"""Stage-1 learning check on SynthTalk: does the latent space disentangle pose and dynamics?

  python experiments/latent_synthtalk.py --workdir=/tmp/latent_synthtalk

1. Generates a SynthTalk set (64 px, 120 speakers x 2 clips, a fifth of the speakers held out)
   and trains `configs/latent.py:small` (`--variant=tiny` for the smaller model) on its train
   speakers with that config's recipe (4,000 steps, GAN terms off) on one CPU device; the cosine
   learning-rate schedule ends at `--max_steps` (`--minutes` caps the time; `--set
   loss.region_l1=0` and the like change a config field, for screens). No pretrained networks
   exist here, so the perceptual and identity terms are off.
2. Takes pairs of frames A (identity X) and B (the same speaker, or another speaker Y), either on
   held-out speakers (never seen in training) or on training speakers posed and animated by the
   factors of held-out clips (unseen frames of seen faces), and compares the model with
   SynthTalk's ground-truth render of the swapped factors:
     reconstruction     D(V_A, id_A, pose_A, dyn_A)  vs  the frame A
     pose transfer      D(V_A, id_A, pose_B, dyn_A)  vs  render(X, pose of B, dynamics of A)
     dynamics transfer  D(V_A, id_A, pose_A, dyn_B)  vs  render(X, pose of A, dynamics of B)
   The no-transfer baseline scores the unswapped reconstruction against the same swapped ground
   truth: a model that ignores the driver's code gets exactly that. The dynamics oracle scores the
   reconstruction plus the ground truth's own change (render of the swap minus A): what a model
   with this reconstruction error would get if it drew the driver's dynamics exactly, so the gap
   between oracle and baseline is all a dynamics transfer can win. The dynamics scores are also
   given over the dynamics region alone (the pixels the swap changes in the ground truth,
   dilated by 2 px), where the expression is not diluted by the rest of the frame.
   What the swap changes is also measured against the unswapped reconstruction: its size
   (`dynamics_change_psnr`, higher = smaller) and the share of it that is one colour shift of
   the whole frame (`dynamics_change_colour_share`: a swap that repaints A in B's colours).
3. Identity leakage (cross-speaker pairs): the dynamics transfer should look like X, not Y:
   its PSNR against render(X, pose_A, dyn_B) and against render(Y, pose_A, dyn_B).
The EMA of the generator's weights (what inference uses) is scored and saved beside the results;
`--params=WORKDIR/ema_params.msgpack` re-scores saved weights without training (give the same
`--variant` and `--set` fields as the run that made them).
Writes `latent_synthtalk.json`, an example grid `latent_synthtalk.png` and the weights
`ema_params.msgpack` (flax.serialization) in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

# The repository root, for its configs/ folder (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import latent as latent_config
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.data.synthtalk import render as render_lib
from vasa_jax.data import records
from vasa_jax.losses import latent as latent_losses
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.trainers import latent
from vasa_jax.training import checkpoint
from vasa_jax.training import config_files
from vasa_jax.training import loop
from vasa_jax.training import sharding

POSE_FACTORS = ("yaw", "pitch", "roll", "distance", "tx", "ty")
DYNAMICS_FACTORS = ("mouth_open", "blink", "eye_theta", "eye_phi")
DYNAMICS_REGION_THRESHOLD = 0.02  # a pixel whose ground truth changes by more (any channel, in
                                  # [-1, 1] units, ~2.5/255) under the dynamics swap is in the region
DYNAMICS_REGION_DILATION = 2      # pixels added around the changed ones


def train(config, minutes: float, max_steps: int):
  """Trains on one device for at most `minutes` or `max_steps`; returns (EMA params, history)."""
  task = latent.make_task(config, process_index=0, process_count=1)
  mesh = sharding.create_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
  state = loop.initial_state(task, config, mesh)[2]()
  train_step = jax.jit(task.train_step, donate_argnums=0)
  rng = loop.root_rng(config)
  history, start = [], time.perf_counter()
  step = 0
  while step < max_steps and time.perf_counter() - start < 60 * minutes:
    state, metrics = train_step(state, next(task.train_iterator), jax.random.fold_in(rng, step),
                                task.frozen)
    step += 1
    if step % 50 == 0:
      metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
      history.append({"step": step, "seconds": round(time.perf_counter() - start, 1),
                      **{name: round(value, 4) for name, value in metrics.items()}})
      print(f"step {step:5d}  {history[-1]['seconds']:7.1f}s  l1 {metrics['loss/l1']:.4f}  "
            f"pose {metrics.get('loss/head_pose', float('nan')):.4f}  "
            f"expression {metrics.get('loss/expression', float('nan')):.4f}  "
            f"psnr {metrics['psnr/reenacted']:.2f} dB", flush=True)
  return state.ema_generator, history


def load_params(config, path: str):
  """EMA weights saved by a previous run (`ema_params.msgpack`), checked against `config`'s model."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--params {path}: no such file")
  abstract = flax.linen.meta.unbox(autoencoder_lib.abstract_variables(config.model)["params"])
  with open(path, "rb") as f:
    try:
      restored = flax.serialization.msgpack_restore(f.read())
    except Exception as error:  # msgpack raises several types for a damaged file
      raise checkpoint.CheckpointError(
          f"--params {path} is not a flax.serialization msgpack file: {error}") from error
  checkpoint.check_param_shapes(restored, abstract, f"--params {path}")
  return restored


def split_ground_truth(data_dir: str, split: str) -> list[dict]:
  """SynthTalk's ground truth (identity vector, per-frame factors) of every clip of `split`."""
  manifest = records.read_manifest(data_dir)
  return [record["ground_truth"] for path in records.split_shard_paths(data_dir, manifest, split)
          for record in records.read_shard(path)]


def evaluation_pairs(identity_clips: list[dict], factor_clips: list[dict], num_pairs: int,
                     seed: int) -> list[dict]:
  """Pairs of frames: identities of `identity_clips` with factors of the held-out clips.

  Clip i of `factor_clips` lends its frames to the identity of clip i % len(identity_clips), so
  with the test split for both, frames are the held-out clips' own; with the train split as
  `identity_clips`, seen faces take poses and dynamics from clips never trained on.
  """
  identities = [identity_clips[i % len(identity_clips)]["identity"]
                for i in range(len(factor_clips))]
  speakers = [tuple(identity) for identity in identities]
  rng = np.random.default_rng(seed)
  pairs = []
  for pair_index in range(num_pairs):
    cross_identity = pair_index % 2 == 1
    a = rng.integers(len(factor_clips))
    candidates = [i for i in range(len(factor_clips))
                  if (speakers[i] != speakers[a]) == cross_identity]
    b = candidates[rng.integers(len(candidates))]
    pairs.append({
        "cross_identity": cross_identity,
        "identity_a": identities[a], "identity_b": identities[b],
        "factors_a": factor_clips[a]["factors"][rng.integers(len(factor_clips[a]["factors"]))],
        "factors_b": factor_clips[b]["factors"][rng.integers(len(factor_clips[b]["factors"]))],
    })
  return pairs


def swap(factors_keep: np.ndarray, factors_take: np.ndarray, names) -> np.ndarray:
  """`factors_keep` with the entries `names` taken from `factors_take`."""
  swapped = np.array(factors_keep, np.float32)
  for name in names:
    index = render_lib.FACTOR_NAMES.index(name)
    swapped[index] = factors_take[index]
  return swapped


def render(identity_vector, factors, resolution) -> np.ndarray:
  image = render_lib.render(render_lib.Identity.from_array(identity_vector), factors, resolution)
  return image.astype(np.float32) / 127.5 - 1.0  # [R, R, 3] in [-1, 1]


def dynamics_region(truth_a: np.ndarray, truth_swap: np.ndarray) -> np.ndarray:
  """[N, S, S, 1] float mask of the pixels the dynamics swap changes in [N, S, S, 3] truths."""
  changed = np.abs(truth_swap - truth_a).max(axis=-1) > DYNAMICS_REGION_THRESHOLD  # [N, S, S]
  dilated = [ndimage.binary_dilation(mask, iterations=DYNAMICS_REGION_DILATION)
             for mask in changed]
  return np.stack(dilated).astype(np.float32)[..., None]


def dynamics_scores(reconstruction: np.ndarray, dynamics_transfer: np.ndarray,
                    truth_a: np.ndarray, truth_swap: np.ndarray) -> dict[str, np.ndarray]:
  """Per-pair PSNR of the dynamics transfer, its no-transfer baseline and the oracle (the
  reconstruction plus the ground truth's own change), over the whole frame and the region; and
  the size and global-colour part of the transfer's change from the reconstruction."""
  oracle = reconstruction + (truth_swap - truth_a)
  region = dynamics_region(truth_a, truth_swap)
  psnr = lambda image, mask=None: np.asarray(latent_losses.psnr(image, truth_swap, mask))
  scores = {}
  for name, image in (("dynamics_transfer", dynamics_transfer),
                      ("dynamics_no_transfer_baseline", reconstruction),
                      ("dynamics_oracle", oracle)):
    scores[name] = psnr(image)
    scores[name + "_in_region"] = psnr(image, region)
  scores["dynamics_region_pixels"] = region.sum(axis=(1, 2, 3))
  # What the driver's code changes in the render: its size, and the part of its energy (mean
  # square) that is one colour shift of the whole frame.
  change = dynamics_transfer - reconstruction  # [N, S, S, 3]
  scores["dynamics_change"] = np.asarray(latent_losses.psnr(dynamics_transfer, reconstruction))
  scores["dynamics_change_energy"] = np.mean(np.square(change), axis=(1, 2, 3))  # [N]
  scores["dynamics_change_colour_energy"] = np.mean(
      np.square(change.mean(axis=(1, 2))), axis=-1)  # [N]
  return scores


def evaluate(config, params, pairs: list[dict]) -> tuple[dict, np.ndarray]:
  size = config.image_size
  model = autoencoder_lib.FaceAutoencoder.from_config(config.model)
  truth = {name: [] for name in ("a", "b", "pose_swap", "dyn_swap", "dyn_swap_other_identity")}
  for pair in pairs:
    truth["a"].append(render(pair["identity_a"], pair["factors_a"], size))
    truth["b"].append(render(pair["identity_b"], pair["factors_b"], size))
    truth["pose_swap"].append(render(
        pair["identity_a"], swap(pair["factors_a"], pair["factors_b"], POSE_FACTORS), size))
    dyn_swap = swap(pair["factors_a"], pair["factors_b"], DYNAMICS_FACTORS)
    truth["dyn_swap"].append(render(pair["identity_a"], dyn_swap, size))
    truth["dyn_swap_other_identity"].append(render(pair["identity_b"], dyn_swap, size))
  truth = {name: jnp.asarray(np.stack(images)) for name, images in truth.items()}

  @jax.jit
  def transfers(params):
    variables = {"params": params}
    pose_a, dyn_a = model.apply(variables, truth["a"], method=model.encode_motion)
    pose_b, dyn_b = model.apply(variables, truth["b"], method=model.encode_motion)
    volume, identity = model.apply(variables, truth["a"], motion=(pose_a, dyn_a),
                                   method=model.encode_appearance)
    decode = lambda pose, dyn: model.apply(variables, volume, identity, pose, dyn,
                                           method=model.decode)
    return decode(pose_a, dyn_a), decode(pose_b, dyn_a), decode(pose_a, dyn_b)

  reconstruction, pose_transfer, dynamics_transfer = transfers(params)
  psnr = lambda x, y: np.asarray(latent_losses.psnr(x, y))
  cross = np.array([pair["cross_identity"] for pair in pairs])
  scores = {
      "reconstruction": psnr(reconstruction, truth["a"]),
      "pose_transfer": psnr(pose_transfer, truth["pose_swap"]),
      "pose_no_transfer_baseline": psnr(reconstruction, truth["pose_swap"]),
      "dynamics_transfer_vs_driver_identity": psnr(dynamics_transfer,
                                                   truth["dyn_swap_other_identity"]),
      **dynamics_scores(*(np.asarray(image) for image in (
          reconstruction, dynamics_transfer, truth["a"], truth["dyn_swap"]))),
  }
  report = {"reconstruction_psnr": round(float(scores["reconstruction"].mean()), 2)}
  for name, subset in (("same_speaker_pairs", ~cross), ("cross_speaker_pairs", cross)):
    report[name] = {key: round(float(np.nanmean(scores[key][subset])), 2) for key in (
        "pose_transfer", "pose_no_transfer_baseline", "dynamics_transfer",
        "dynamics_no_transfer_baseline", "dynamics_oracle", "dynamics_transfer_in_region",
        "dynamics_no_transfer_baseline_in_region", "dynamics_oracle_in_region",
        "dynamics_region_pixels")}
    report[name]["dynamics_change_psnr"] = round(float(np.mean(
        scores["dynamics_change"][subset])), 2)
    report[name]["dynamics_change_colour_share"] = round(float(
        scores["dynamics_change_colour_energy"][subset].sum() /
        max(scores["dynamics_change_energy"][subset].sum(), 1e-20)), 3)
    report[name]["num_pairs"] = int(subset.sum())
  report["identity_leakage"] = {
      "psnr_to_own_identity": round(float(scores["dynamics_transfer"][cross].mean()), 2),
      "psnr_to_driver_identity": round(float(
          scores["dynamics_transfer_vs_driver_identity"][cross].mean()), 2),
      "fraction_closer_to_driver_identity": round(float(np.mean(
          scores["dynamics_transfer_vs_driver_identity"][cross] >
          scores["dynamics_transfer"][cross])), 3),
  }
  grid = np.concatenate([np.concatenate(list(np.asarray(column[:6])), axis=0) for column in (
      truth["a"], truth["b"], reconstruction, truth["pose_swap"], pose_transfer,
      truth["dyn_swap"], dynamics_transfer)], axis=1)
  return report, np.clip((grid + 1) * 127.5, 0, 255).astype(np.uint8)


def main(argv: Optional[Sequence[str]] = None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--variant", default="small", choices=("small", "tiny"),
                      help="configs/latent.py variant trained.")
  parser.add_argument("--max_steps", type=int, default=None,
                      help="Training steps (default: the config's total_steps); the cosine "
                      "learning-rate schedule ends here.")
  parser.add_argument("--minutes", type=float, default=90.0, help="Cap on the training time.")
  parser.add_argument("--num_speakers", type=int, default=120)
  parser.add_argument("--clips_per_speaker", type=int, default=2)
  parser.add_argument("--num_pairs", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="Overrides a config field (Python literal), e.g. "
                      "--set loss.region_l1=10; repeatable.")
  parser.add_argument("--params", default=None, metavar="PATH",
                      help="Scores these saved EMA weights (a run's ema_params.msgpack) instead "
                      "of training; writes latent_synthtalk_rescored.json/.png.")
  args = parser.parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  data_dir = os.path.join(args.workdir, "synthtalk")
  if not os.path.exists(os.path.join(data_dir, records.MANIFEST_NAME)):
    synthtalk.main([f"--output_dir={data_dir}", f"--num_speakers={args.num_speakers}",
                    f"--clips_per_speaker={args.clips_per_speaker}", "--resolution=64",
                    "--test_fraction=0.2", f"--seed={args.seed}"])

  config = latent_config.get_config(args.variant)
  config.data_dir = data_dir
  config.seed = args.seed
  config.total_steps = args.max_steps or config.total_steps
  config.eval_every_steps = 0
  config_files.apply_overrides(config, args.set)
  if args.params:
    params, history, output_name = load_params(config, args.params), [], "latent_synthtalk_rescored"
  else:
    params, history = train(config, args.minutes, config.total_steps)
    output_name = "latent_synthtalk"
    with open(os.path.join(args.workdir, "ema_params.msgpack"), "wb") as f:
      f.write(flax.serialization.to_bytes(params))
  train_clips, test_clips = (split_ground_truth(data_dir, split) for split in ("train", "test"))
  held_out, grid = evaluate(config, params,
                            evaluation_pairs(test_clips, test_clips, args.num_pairs, args.seed))
  seen, _ = evaluate(config, params,
                     evaluation_pairs(train_clips, test_clips, args.num_pairs, args.seed))
  report = {"config": f"configs/latent.py:{args.variant}", "overrides": args.set,
            "scored_params": args.params,
            "gan_terms": bool(config.loss.adversarial or config.loss.feature_matching),
            "head_pose_weight": config.loss.head_pose,
            "steps": history[-1]["step"] if history else 0,
            "training_minutes": history[-1]["seconds"] / 60 if history else 0.0,
            "learning_rate": config.optimizer.learning_rate,
            "num_train_speakers": len({tuple(clip["identity"]) for clip in train_clips}),
            "held_out": held_out, "seen_speakers_held_out_frames": seen,
            "training_history": history}
  output = os.path.join(args.workdir, output_name)
  with open(output + ".json", "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  Image.fromarray(grid).save(output + ".png")
  print(json.dumps({key: report[key] for key in ("held_out", "seen_speakers_held_out_frames")},
                   indent=1))
  print(f"wrote {output}.json and {output}.png (columns: A, B, reconstruction, pose-swap truth, "
        "pose transfer, dynamics-swap truth, dynamics transfer)")


if __name__ == "__main__":
  main()
