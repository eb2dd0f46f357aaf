"""Stage 2: VASA-1's motion diffusion transformer, `vasa_jax.trainers.motion`.

  python -m data_prep.extract_motion --latent_checkpoint=/tmp/latent_tiny \
      --shards=/data/synthtalk --output_dir=/data/synthtalk_motion --config=configs/motion.py:tiny
  python -m vasa_jax.train --config=configs/motion.py:tiny --workdir=/tmp/motion_tiny \
      --config.data_dir=/data/synthtalk_motion

Variants (after the colon):
  paper (default): 8 layers, 512 wide, 8 heads (27M parameters at motion dim 263 and Wav2Vec2-base
      features; VASA-1 reports ~29M); window W=100 frames, K=10 previous frames at 25 fps (the
      paper gives no W or K; JoyVASA uses these); motion = [z_pose (7), z_dyn (256)] of
      configs/latent.py's paper model; audio = Wav2Vec2-base hidden states (768); VASA-1's
      recipe: the x0 loss alone, condition dropout 0.1 (X_pre, A_pre 0.5), CFG scales 0.5 / 1.0,
      50 sampling steps. The default: the recipe with published results.
  extended: `paper` plus this project's additions found on SynthTalk (`_use_extended_recipe`:
      the carry of X_pre, the entry blend, the velocity loss), each a field marked ADDITION
      below with its evidence; docs/architecture.md lists them.
  The CPU variants below carry the additions too (they were measured with them):
  demo: `tiny` with motion = [z_pose (7), z_dyn (1)] of configs/latent.py:demo, at the length
      `python -m vasa_jax.demo` trains it.
  tiny: 2 layers, 64 wide, window 25, 5 previous frames, log-mel audio features (no pretrained
      weights needed), motion = [z_pose (7), z_dyn (16)] of configs/latent.py:tiny (for
      :small's 1-entry z_dyn set model.motion_dim = 8, as experiments/motion_synthtalk.py
      does); trains on a CPU.
Every variant conditions on the clip's 8 emotion scores (`model.emotion_dim`; docs/data.md,
"Emotion scores"): SynthTalk stores its ground truth, real data needs `data_prep.prepare
--emotion_weights`, or `--config.model.emotion_dim=0` for data without them.
`model.motion_dim`, `model.audio_dim` and `model.emotion_dim` must match the stage-2 shards (the trainer checks the
manifest written by `data_prep.extract_motion` and names any mismatch).
"""

import ml_collections

from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.training import base_config

VARIANTS = ("paper", "extended", "tiny", "demo")
# z_pose: yaw, pitch, roll, translation x, y, z and log scale (`FaceAutoencoder.encode_motion`).
POSE_DIM = motion_records.POSE_DIM


def audio_config(variant: str) -> ml_collections.ConfigDict:
  """The speech features (`vasa_jax.data.speech_features.from_config`) of extraction and sampling."""
  audio = ml_collections.ConfigDict()
  # "wav2vec2" (VASA-1) or "log_mel" (no pretrained weights; CPU checks).
  audio.features = "log_mel" if variant in ("tiny", "demo") else "wav2vec2"
  # Local Hugging Face Wav2Vec2 directory (config.json + model.safetensors / pytorch_model.bin /
  # flax_model.msgpack), e.g. a download of facebook/wav2vec2-base-960h.
  audio.wav2vec2_dir = ""
  # Wav2Vec2 hidden state used: 0 the feature projection, i the output of layer i, -1 the last.
  audio.layer = -1
  # Seconds of video frames per Wav2Vec2 block: each block's forward also sees 2 s before it and
  # 0.1 s after it, that segment normalised on its own (speech_features; offline = streaming).
  # One motion window (W / fps: 4 s; tiny and demo 1 s): a stream gets a window's features as
  # its audio is in.
  audio.chunk_seconds = 1.0 if variant in ("tiny", "demo") else 4.0
  # Mel bands of the "log_mel" features.
  audio.num_mels = 40
  return audio


def get_config(arg=None) -> ml_collections.ConfigDict:
  """Stage-2 config; `arg` is the variant (VARIANTS; "paper" by default)."""
  variant = arg or "paper"
  if variant not in VARIANTS:
    raise ValueError(f"unknown configs/motion.py variant {variant!r}; choose one of {VARIANTS}")
  tiny = variant in ("tiny", "demo")
  config = base_config.base_config()
  config.stage = "motion"
  # Video frame rate of the motion sequences and audio features.
  config.fps = 25.0
  config.audio = audio_config(variant)

  config.model = ml_collections.ConfigDict()
  # Width of a motion frame [z_pose, z_dyn]: POSE_DIM + the stage-1 model's dyn_dim.
  config.model.motion_dim = POSE_DIM + (16 if tiny else 256)
  # Width of an audio feature frame: num_mels for log_mel, the hidden size for Wav2Vec2.
  config.model.audio_dim = config.audio.num_mels if tiny else 768
  # Width of the emotion condition: the clip's mean emotion scores (`data_prep.extract_motion`),
  # 8 = HSEmotion's classes (`data_prep.prepare --emotion_weights`; SynthTalk's ground truth);
  # VASA-1 conditions on the emotion with condition dropout (diffusion.drop_emotion). 0: data
  # prepared without an emotion classifier (the emotion token is then a learned constant).
  config.model.emotion_dim = len(records.EMOTION_CLASSES)
  # W: frames generated per window.
  config.model.window = 25 if tiny else 100
  # K: frames of the previous window conditioning the next (X_pre, A_pre).
  config.model.num_previous = 5 if tiny else 10
  config.model.num_layers = 2 if tiny else 8  # transformer encoder layers
  config.model.embed_dim = 64 if tiny else 512  # token width
  config.model.num_heads = 4 if tiny else 8  # attention heads
  config.model.mlp_dim = 128 if tiny else 2048  # MLP hidden width
  config.model.dropout = 0.1  # dropout in attention outputs and MLPs during training
  # ADDITION (on in `extended`, `tiny`, `demo`): add a learned carry [W, M] (initialised to 1)
  # times the last previous frame to the predicted X^0 (when X_pre is given). VASA-1 has none:
  # without it (and without the time
  # embedding on every frame token, models/motion_dit.py) the tiny model barely used X_pre and
  # each window's first frame jumped away from it (see experiments/LOG.md, "Stage-2 screens: why
  # the window boundaries jump").
  config.model.carry_previous = False
  # ADDITION (3 in `extended`, `tiny`, `demo`; 0 = off): with X_pre given, a window's first frame
  # is X_pre's last frame plus a predicted step (a zero-initialised projection of the first
  # frame's token), and the offset between it and the window's own first frame fades as
  # exp(-i / entry_blend_frames) over frames i. VASA-1 has none: it joins each window onto the
  # previous one without losing the mouth or the gaze, where reading every frame's output as a
  # step (cumulative sum) lost the mouth
  # (see experiments/LOG.md, "Stage-2 screens: joining a window onto X_pre" and "Stage-2 check
  # with the entry blend (stage 1 at 753a55c)").
  config.model.entry_blend_frames = 0.0
  config.model.remat = False  # recompute each layer's activations in the backward pass
  config.model.scan = not tiny  # stack the layers with nn.scan (one compiled layer)
  # Compute dtype: "float32", "bfloat16", or "auto" = bfloat16 on GPUs and TPUs, float32 on CPUs
  # (`layers.compute_dtype`); parameters, layer norms and softmax are float32 whatever it is.
  config.model.dtype = "float32" if tiny else "auto"

  config.diffusion = ml_collections.ConfigDict()
  # Noise schedule of `vasa_jax.diffusion.schedules.make_schedule` ("linear" or "cosine").
  config.diffusion.schedule = "cosine"
  # Training diffusion steps T.
  config.diffusion.num_steps = 1000
  # Probabilities of the training-time condition dropout (VASA-1: 0.1 each, 0.5 for X_pre/A_pre)
  # and of truncating the window's trailing audio frames.
  config.diffusion.drop_audio = 0.1
  config.diffusion.drop_gaze = 0.1
  config.diffusion.drop_distance = 0.1
  config.diffusion.drop_emotion = 0.1
  config.diffusion.drop_previous = 0.5
  config.diffusion.truncate_audio = 0.1
  # ADDITION (1 in `extended`, `tiny`, `demo`; 0 = off): weight of the velocity term added to
  # the x0 loss (schedules.velocity_loss: squared error of the frame-to-frame steps, the step out
  # of X_pre's last frame included), as motion diffusion models such as MDM add. VASA-1 gives
  # only the x0 loss: it brings the motion within a
  # window close to the real motion's; weight 10 over-smooths (see experiments/LOG.md, "Stage-2
  # screens: why the window boundaries jump").
  config.diffusion.velocity_loss = 0.0
  # Lower bound of a motion dimension's std in the dataset statistics (constant dims stay finite).
  config.diffusion.min_std = 1e-3

  config.sampling = ml_collections.ConfigDict()
  config.sampling.num_steps = 50  # denoising steps (VASA-1: 50; 10 is ~5x faster)
  config.sampling.method = "ddim"  # "ddim" (deterministic at eta 0) or "ddpm"
  config.sampling.eta = 0.0  # DDIM stochasticity
  config.sampling.lambda_audio = 0.5  # audio guidance scale (VASA-1 default)
  config.sampling.lambda_gaze = 1.0  # gaze guidance scale (VASA-1 default)

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3 if tiny else 1e-4  # peak learning rate (our choice)
  config.optimizer.warmup_steps = 50 if tiny else 2_000  # linear warm-up steps
  config.optimizer.final_learning_rate = 1e-5 if tiny else 1e-6  # cosine decay end
  config.optimizer.b1 = 0.9  # Adam beta1
  config.optimizer.b2 = 0.999  # Adam beta2
  config.optimizer.weight_decay = 1e-2  # AdamW decoupled weight decay
  config.optimizer.grad_clip_norm = 1.0  # global-norm gradient clipping
  # Decay of the exponential moving average of the weights (evaluated, sampled and exported): the
  # most it reaches; it warms up as min(ema_decay, (1 + step) / (10 + step))
  # (`vasa_jax.training.ema`), so early checkpoints already hold mostly trained weights.
  config.ema_decay = 0.99 if tiny else 0.9999

  config.total_steps = 2_000 if tiny else 400_000
  config.batch_size = 16 if tiny else 256
  config.log_every_steps = 20 if tiny else 100
  config.checkpoint_every_steps = 500 if tiny else 10_000
  config.eval_every_steps = 500 if tiny else 10_000
  config.data.train_split = "train"  # split trained on
  config.data.eval_split = "test"  # held-out split of the evaluation loss and samples

  # Rendered samples, every eval_every_steps beside the held-out x0 loss
  # (`vasa_jax.evaluators.motion_samples`): generated with the EMA weights, drawn by stage 1,
  # logged as an image strip with lip sync on the pixels and Delta P.
  config.eval = ml_collections.ConfigDict()
  # Held-out clips (the first ones of data.eval_split) generated and rendered; 0: none.
  config.eval.num_clips = 2 if tiny else 4
  # Seconds generated from each clip's start (shorter clips are used whole).
  config.eval.clip_seconds = 2.0
  # Stage-1 run (--workdir) that renders them; "": the run the motion manifest names
  # (`data_prep.extract_motion` records the one that made the data).
  config.eval.latent_checkpoint = ""
  # Clip shards holding each clip's first frame, the face rendered; "": the directory the motion
  # manifest names.
  config.eval.clip_data_dir = ""
  # Rendered frames per clip in the image strip (evenly spaced), after its source frame.
  config.eval.strip_frames = 8
  # Also write each rendered clip with its speech to <workdir>/eval_samples/<step>/.
  config.eval.write_videos = True
  # SyncNet weights (`data_prep.convert_weights --kind=syncnet`, or configs/syncnet.py's export);
  # given, the rendered clips also get SyncNet's Sc and SD (eval/sync_confidence, sync_distance).
  config.eval.syncnet = ""
  config.eval.syncnet_width = 1.0  # that SyncNet's width (configs/syncnet.py:cpu exports 0.25)
  # CAPP checkpoint directory (configs/capp.py's export); given, the rendered clips also get
  # CAPP of their tracked head pose against their speech (eval/capp).
  config.eval.capp_checkpoint = ""

  if variant != "paper":
    _use_extended_recipe(config)
  if variant == "demo":
    # `tiny` for `configs/latent.py:demo`'s one-entry z_dyn, at the demo's length.
    config.model.motion_dim = POSE_DIM + 1
    config.total_steps = 1_000
    config.checkpoint_every_steps = 500
    config.eval_every_steps = 500
  return config


def _use_extended_recipe(config: ml_collections.ConfigDict) -> None:
  """The additions to VASA-1's recipe found on SynthTalk (the fields marked ADDITION above, each
  with its evidence): `extended` and the CPU variants, which were measured with them."""
  config.model.carry_previous = True  # learned carry of X_pre's last frame
  config.model.entry_blend_frames = 3.0  # the window joined onto X_pre, fading over ~3 frames
  config.diffusion.velocity_loss = 1.0  # squared error of the frame-to-frame steps
