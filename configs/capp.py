"""CAPP (VASA-1's contrastive audio-pose score) encoders, `vasa_jax.trainers.capp`.

  python -m data_prep.synthtalk --output_dir=/data/synthtalk --min_seconds=4 --max_seconds=6
  python -m vasa_jax.train --config=configs/capp.py:cpu --workdir=/tmp/capp \
      --config.data_dir=/data/synthtalk
  python -m vasa_jax.evaluate --generated=... --capp_checkpoint=/tmp/capp

Variants (after the colon):
  paper (default): 3 s windows, a 6-layer pose transformer and a 6-layer audio transformer over
      Wav2Vec2 features (256 wide), batch 256; for a GPU/TPU with `--config.audio.wav2vec2_dir`.
  cpu: the same 6-layer pose encoder and a 2-layer audio encoder over log-mel features, 32 wide,
      batch 32, 4 shifted and 2 scaled pose negatives per example, 1,400 steps: 30 minutes on
      the shared 2-core machine (experiments/capp_synthtalk.py; it does not generalise to
      held-out SynthTalk speakers yet, experiments/LOG.md 2026-12-08).
  tiny: 20-frame windows, 2 + 2 layers 32 wide: for tests.
"""

import ml_collections

from vasa_jax.training import base_config

VARIANTS = ("paper", "cpu", "tiny")


def get_config(arg=None) -> ml_collections.ConfigDict:
  """CAPP training config; `arg` is the variant: "paper" (default), "cpu" or "tiny"."""
  variant = arg or "paper"
  if variant not in VARIANTS:
    raise ValueError(f"unknown configs/capp.py variant {variant!r}; choose one of {VARIANTS}")
  paper, tiny = variant == "paper", variant == "tiny"
  config = base_config.base_config()
  config.stage = "capp"
  # Video frame rate of the clips (windows are counted in frames).
  config.fps = 25.0
  config.total_steps = {"paper": 100_000, "cpu": 1400, "tiny": 20}[variant]
  config.batch_size = {"paper": 256, "cpu": 32, "tiny": 8}[variant]
  config.log_every_steps = 100 if not tiny else 5
  config.eval_every_steps = {"paper": 2000, "cpu": 250, "tiny": 10}[variant]
  config.checkpoint_every_steps = {"paper": 5000, "cpu": 500, "tiny": 10}[variant]

  # Speech features (`vasa_jax.data.speech_features.from_config`), one per video frame.
  config.audio = audio = ml_collections.ConfigDict()
  # "wav2vec2" (VASA-1 initialises its audio encoder from Wav2Vec2) or "log_mel" (no weights).
  audio.features = "wav2vec2" if paper else "log_mel"
  # Local Hugging Face Wav2Vec2 directory (config.json + weights) for "wav2vec2".
  audio.wav2vec2_dir = ""
  # Wav2Vec2 hidden state used: 0 the feature projection, i the output of layer i, -1 the last.
  audio.layer = -1
  # Seconds of video frames per Wav2Vec2 block: each block's forward also sees 2 s before it and
  # 0.1 s after it, that segment normalised on its own (speech_features; offline = streaming).
  # As configs/motion.py: one motion window (W / fps = 4 s).
  audio.chunk_seconds = 4.0
  # Mel bands of the "log_mel" features.
  audio.num_mels = 40

  config.model = model = ml_collections.ConfigDict()
  # L: frames per window (VASA-1: 3 s; 75 at 25 fps).
  model.window = 20 if tiny else 75
  # Transformer blocks of the pose encoder (VASA-1: 6) and of the audio encoder.
  model.pose_layers = 2 if tiny else 6
  model.audio_layers = {"paper": 6, "cpu": 2, "tiny": 2}[variant]
  # Token width, attention heads and MLP hidden units of both encoders.
  model.embed_dim = {"paper": 256, "cpu": 32, "tiny": 32}[variant]
  model.num_heads = 4
  model.mlp_dim = 4 * model.embed_dim
  # Size of the (unit-length) embeddings compared by the cosine.
  model.output_dim = {"paper": 256, "cpu": 32, "tiny": 16}[variant]

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = {"paper": 3e-4, "cpu": 2e-3, "tiny": 1e-3}[variant]  # AdamW peak,
  # cosine decay to 0
  config.optimizer.warmup_steps = {"paper": 2000, "cpu": 100, "tiny": 2}[variant]
  config.optimizer.weight_decay = 0.01
  config.optimizer.grad_clip_norm = 1.0  # global-norm gradient clipping

  config.data.train_split = "train"
  config.data.eval_split = "test"
  # Negatives per example, beside the other clips of the batch (`vasa_jax.trainers.capp`):
  # num_shifted copies of the same clip's pose moved by distinct shifts of min_shift .. max_shift
  # frames either way (they teach when), num_scaled copies of its pose window with the motion
  # scaled by 2^u, |u| in [min_log2_scale, max_log2_scale] (they teach how much). 0 and 0:
  # CLIP's in-batch negatives only.
  config.data.num_shifted = 4 if variant == "cpu" else 1
  config.data.min_shift = 1
  config.data.max_shift = 4 if tiny else 8
  config.data.num_scaled = 2 if variant == "cpu" else 0
  config.data.min_log2_scale = 1.0  # scales 1/2 and 2
  config.data.max_log2_scale = 2.0  # scales 1/4 and 4
  return config
