"""SyncNet (joonson/syncnet_python's architecture) trained here, `vasa_jax.trainers.syncnet`.

  python -m data_prep.synthtalk --output_dir=/data/synthtalk --resolution=128
  python -m vasa_jax.train --config=configs/syncnet.py:cpu --workdir=/tmp/syncnet \
      --config.data_dir=/data/synthtalk
  python -m vasa_jax.evaluate --generated=... --syncnet=/tmp/syncnet/syncnet.npz \
      --syncnet_width=0.25

Variants (after the colon):
  paper (default): the released network's widths (1.0); for a GPU/TPU.
  cpu: every hidden channel count x 0.25 (16-48-96-64-64-128 audio, 24-64-64-64-64-128 lips, 128
      wide heads; embeddings stay 1024-d), batch 8 examples x 4 lip windows, 600 steps; trains on
      SynthTalk on a CPU in under an hour (experiments/syncnet_synthtalk.py). Input sizes are the
      original's (224 x 224 x 5 lips, 13 x 20 MFCCs), so the evaluator scores with it exactly as
      with the released weights.
"""

import ml_collections

from vasa_jax.training import base_config

VARIANTS = ("paper", "cpu")


def get_config(arg=None) -> ml_collections.ConfigDict:
  """SyncNet training config; `arg` is the variant: "paper" (default) or "cpu"."""
  variant = arg or "paper"
  if variant not in VARIANTS:
    raise ValueError(f"unknown configs/syncnet.py variant {variant!r}; choose one of {VARIANTS}")
  cpu = variant == "cpu"
  config = base_config.base_config()
  config.stage = "syncnet"
  config.total_steps = 600 if cpu else 50_000
  config.batch_size = 8 if cpu else 16
  config.log_every_steps = 20 if cpu else 100
  config.eval_every_steps = 100 if cpu else 2000
  config.checkpoint_every_steps = 200 if cpu else 2000

  config.model = ml_collections.ConfigDict()
  # Multiplier of every hidden channel count (1.0: syncnet_v2.model's network).
  config.model.width = 0.25 if cpu else 1.0

  # Temperature T of the offset cross-entropy's logits -distance / T (the embeddings' scale is
  # learnt too, so T mostly sets how sharp the initial softmax is).
  config.temperature = 1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 3e-4 if cpu else 1e-4  # Adam
  config.optimizer.grad_clip_norm = 10.0  # global-norm gradient clipping

  config.data.train_split = "train"
  config.data.eval_split = "test"
  # Audio offsets K each way that every lip window is scored against (2 K + 1 audio windows and
  # the zero embedding per example): the evaluator's search range (vshift 15).
  config.data.max_offset = 15
  # Consecutive lip windows per example; they share their 2 K + L audio windows (cheaper per lip
  # window than one window against its own 2 K + 1). The batch is batch_size x lip_windows lip
  # windows.
  config.data.lip_windows = 4
  return config
