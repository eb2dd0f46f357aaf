"""Lip sync on the pixels against stage-1 training steps: when does a rendered mouth follow speech?

  python experiments/lip_sync_curve.py --workdir=/tmp/lip_sync_curve \
      [--latent_config=configs/latent.py:demo] [--steps=1200] [--every=200]

Generates the demo's SynthTalk set (`vasa_jax.demo.DEMO_DATA`), trains stage 1 with the given
config to `--steps` (checkpoints every `--every`, all kept), then scores every checkpoint's live
and/or EMA weights (`--weights`) on held-out speakers: each held-out clip's frames are encoded by the motion
encoder and rendered on the clip's first frame (self-reenactment; stage 2 is not involved), and
the data-preparation tracker reads the mouth back from the pixels (`vasa_jax.evaluators.
lip_sync`): correlation with the speech envelope and with the true mouth opening, face-found
rate, and PSNR against the real frames. The real clips' own values are the reference. Writes
`lip_sync_curve.json` and a markdown table (`lip_sync_curve.md`) in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

# The repository root (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vasa_jax import demo
from vasa_jax import pipeline
from vasa_jax.data import media
from vasa_jax.data import records
from vasa_jax.evaluators import lip_sync
from vasa_jax.evaluators import synthtalk_check
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.trainers import latent as latent_trainer
from vasa_jax.training import checkpoint
from vasa_jax.training import config_files

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 16  # frames per jitted encode-and-render call
WEIGHTS = {"ema": "ema_generator", "live": "generator"}  # --weights name -> train-state entry


def heldout_clips(synthtalk_dir: str, count: int) -> list[dict]:
  """Up to `count` held-out clip records, spread over the speakers."""
  manifest = records.read_manifest(synthtalk_dir)
  clips = [record for path in records.split_shard_paths(synthtalk_dir, manifest, "test")
           for record in records.read_shard(path)]
  return synthtalk_check.spread_over_speakers(clips, count)


def make_reenact(model_config):
  """(params, source frame [1, S, S, 3], frames [B, S, S, 3]) -> renders uint8 [B, S, S, 3]."""
  model = autoencoder_lib.FaceAutoencoder.from_config(model_config)

  @jax.jit
  def reenact(params, source, frames):
    pixels = lambda images: images.astype(jnp.float32) / 127.5 - 1.0
    volume, z_id = model.apply({"params": params}, pixels(source),
                               method=model.encode_appearance)
    z_pose, z_dyn = model.apply({"params": params}, pixels(frames), method=model.encode_motion)
    count = frames.shape[0]
    images = model.apply({"params": params}, jnp.broadcast_to(volume, (count,) + volume.shape[1:]),
                         jnp.broadcast_to(z_id, (count,) + z_id.shape[1:]), z_pose, z_dyn,
                         method=model.decode)
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
  return reenact


def score(reenact, params, clips: list[dict]) -> dict:
  """Self-reenactment scores of one set of weights on `clips` (see the module doc)."""
  per_clip, tracks, waveforms, psnrs = [], [], [], []
  for clip in clips:
    frames = np.stack([media.decode_jpeg(f) for f in clip["frames"]])
    padded = np.concatenate([frames, np.repeat(frames[-1:], -len(frames) % BATCH, axis=0)])
    video = np.concatenate([np.asarray(reenact(params, frames[:1], padded[start:start + BATCH]))
                            for start in range(0, len(padded), BATCH)])[:len(frames)]
    psnrs.append(synthtalk_check.psnr_db(video, frames))
    waveform = clip["audio"].astype(np.float32) / 32768.0
    truth = np.asarray(clip["ground_truth"]["factors"])[:, synthtalk_check.MOUTH_INDEX]
    track = lip_sync.track_mouth(video)
    per_clip.append(lip_sync.lip_sync_scores(track, waveform, clip["fps"], truth))
    tracks.append(track)
    waveforms.append(waveform)
  summary = lip_sync.summarise(per_clip, lip_sync.shuffled_control(tracks, waveforms, 25.0))
  return {"psnr_db": round(float(np.mean(psnrs)), 2),
          **{key: round(value, 3) if isinstance(value, float) else value
             for key, value in summary.items()}}


def real_reference(clips: list[dict]) -> dict:
  """The same measures on the real frames."""
  per_clip = []
  for clip in clips:
    frames = np.stack([media.decode_jpeg(f) for f in clip["frames"]])
    truth = np.asarray(clip["ground_truth"]["factors"])[:, synthtalk_check.MOUTH_INDEX]
    per_clip.append(lip_sync.lip_sync_scores(lip_sync.track_mouth(frames),
                                             clip["audio"].astype(np.float32) / 32768.0,
                                             clip["fps"], truth))
  return {key: round(value, 3) if isinstance(value, float) else value
          for key, value in lip_sync.summarise(per_clip, []).items()}


def markdown(report: dict) -> str:
  keys = ("psnr_db", "mouth_envelope_correlation", "mouth_truth_correlation",
          "face_found_rate", "shuffled_audio_correlation")
  lines = [(f"Stage 1 `{report['latent_config']}` on {report['num_clips']} held-out SynthTalk "
            "clips (self-reenactment rendered at 64 px, tracked at 256 px)."), "",
           "| step | weights | " + " | ".join(keys) + " |",
           "|---|---|" + "---|" * len(keys)]
  for row in report["curve"]:
    for weights in (name for name in WEIGHTS if name in row):
      lines.append(f"| {row['step']} | {weights} | "
                   + " | ".join(str(row[weights].get(key, "")) for key in keys) + " |")
  real = report["real_clips"]
  lines.append("| real clips | | | " + " | ".join(
      str(real.get(key, "")) for key in keys[1:4]) + " | |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--latent_config", default=os.path.join(REPOSITORY,
                                                              "configs/latent.py:demo"))
  parser.add_argument("--steps", type=int, help="stage-1 steps (default: the config's)")
  parser.add_argument("--every", type=int, default=200, help="checkpoint and score interval")
  parser.add_argument("--num_clips", type=int, default=16, help="held-out clips scored")
  parser.add_argument("--weights", default="ema", choices=("ema", "live", "ema,live"),
                      help="which weights of each checkpoint are scored (inference uses EMA)")
  args = parser.parse_args(argv)
  config = config_files.load(args.latent_config)
  where = pipeline.paths(args.workdir)
  pipeline.make_synthtalk(where["synthtalk"], demo.DEMO_DATA)
  config.update(data_dir=where["synthtalk"], total_steps=args.steps or config.total_steps,
                checkpoint_every_steps=args.every, keep_checkpoints=1000, eval_every_steps=0)
  latent_trainer.train_and_evaluate(config, where["latent"], pipeline.one_device_mesh())
  clips = heldout_clips(where["synthtalk"], args.num_clips)
  reenact = make_reenact(config.model)
  steps = sorted(int(name) for name in os.listdir(os.path.join(where["latent"], "checkpoints"))
                 if name.isdigit())
  curve = []
  for step in steps:
    _, state, _ = checkpoint.restore_for_inference(where["latent"], "latent", step)
    row = {"step": step}
    for weights in args.weights.split(","):
      row[weights] = score(reenact, state[WEIGHTS[weights]], clips)
    print(json.dumps(row), flush=True)
    curve.append(row)
  report = {"latent_config": os.path.relpath(args.latent_config, REPOSITORY),
            "total_steps": config.total_steps, "num_clips": len(clips),
            "real_clips": real_reference(clips), "curve": curve}
  with open(os.path.join(args.workdir, "lip_sync_curve.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(args.workdir, "lip_sync_curve.md"), "w", encoding="utf-8") as f:
    f.write(markdown(report))
  print(markdown(report))


if __name__ == "__main__":
  main()
