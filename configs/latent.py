"""Stage 1: VASA-1's face latent autoencoder (MegaPortraits-based), `vasa_jax.trainers.latent`.

  python -m vasa_jax.train --config=configs/latent.py:tiny --workdir=/tmp/latent_tiny \
      --config.data_dir=DIR

Variants (after the colon):
  paper (default): the papers' model and recipe at 512x512 input: appearance volume 96 channels
      x 16 deep x 64 x 64 (H/8); 179M parameters (VASA-1 reports ~200M for its face latent
      model); MegaPortraits' loss terms and weights (VGG19 20, face 4, gaze 5, hinge GAN 1,
      feature matching 40, cycle 2 with s=5, m=0.2), VASA-1's pairwise transfer and
      cross-identity terms, MegaPortraits' 512 schedule (300k steps at batch 16, AdamW, cosine
      2e-4 -> 1e-6). The default: the recipe with published results on real talking-head video.
  paper_256: the same at 256x256 input (volume 96 x 16 x 32 x 32; 200k steps at batch 24).
  extended, extended_256: `paper` / `paper_256` plus this project's additions found on SynthTalk
      (`_use_extended_recipe`: pixel L1, head-pose and expression supervision with SynthTalk's
      normalisation constants, transfer cycle, pose decorrelation), each a config field marked
      ADDITION below with its evidence; docs/architecture.md lists them.
  demo: `small` with wider face-drawing layers and without the terms that need extra renders
      (see `_use_demo_recipe`), 1,200 steps: what `python -m vasa_jax.demo` trains (~9 minutes
      on 2 CPU cores). A face appears by step 200 (21 dB), the rendered mouth follows the speech
      from step 400 (experiments/results/lip_sync_curve_aede99b.md).
  tiny: 64x64 input, narrow layers and single residual blocks (0.2M parameters); a forward and
      backward pass at batch 4 takes ~0.1 s on a CPU once compiled (for tests and smoke runs).
      It never draws a recognisable face at CPU lengths: after 600 steps (~3 minutes on 2 CPU
      cores) held-out renders are at 18 dB PSNR and the tracker finds no face in them.
  The CPU variants below carry the additions too (they were measured with them):
  small: tiny's widths with the volume at H/4 (8 x 4 x 16 x 16), a shorter decoder that also
      modulates on z_dyn, a spatial readout of the motion encoder and a z_dyn of one entry,
      the measured mouth opening (0.21M parameters); about 2.5x tiny's step time. It
      carries the recipe of the CPU learning checks (`experiments/latent_synthtalk.py`,
      `experiments/motion_synthtalk.py`): 4,000 steps at a 1e-3 peak learning rate, GAN terms
      off, an extra L1 on the mouth and eye boxes, the locality of the dynamics transfer, the
      pose decorrelation on all of z_dyn. A face appears after about 250 steps (~5 minutes on 2
      CPU cores, compilation included): held-out renders at 21 dB PSNR, the tracker finds a face
      in 2 of 3 of them; the mouth follows the speech from about 500 steps.
Print the parameter counts with `python -m vasa_jax.models.autoencoder paper paper_256 tiny
small`.
Where the papers are silent (block counts, warping-generator widths, pose bounds), the values are
this project's choices, noted per field.
"""

import ml_collections

from vasa_jax.training import base_config

VARIANTS = ("paper", "paper_256", "extended", "extended_256", "tiny", "small", "demo")
# The model size ("512", "256" or "tiny") of each variant.
_SIZES = {"paper": "512", "paper_256": "256", "extended": "512", "extended_256": "256",
          "tiny": "tiny", "small": "tiny", "demo": "tiny"}


def model_config(image_size) -> ml_collections.ConfigDict:
  """The paper-size architecture (`FaceAutoencoder.from_config` reads it)."""
  model = ml_collections.ConfigDict()
  # Resolution of the (square) images fed to the model; a reference to `config.image_size`.
  model.image_size = image_size
  # Compute dtype of the activations: "float32", "bfloat16", or "auto" = bfloat16 on GPUs and
  # TPUs, float32 on CPUs (`layers.compute_dtype`); parameters are always float32, normalisation
  # always runs in float32.
  model.dtype = "auto"
  # Rematerialise every residual block in the backward pass (less memory, ~1/3 more compute).
  model.remat = False
  # Group-norm groups (reduced to a divisor of the channel count of narrow layers).
  model.num_groups = 32
  # Channels C of the 3D appearance volume (MegaPortraits: 96).
  model.volume_channels = 96
  # Depth D of the appearance volume (MegaPortraits: 16; 96 x 16 = 1536 2D channels).
  model.volume_depth = 16
  # Size of the identity code z_id (MegaPortraits' ResNet-50 descriptor; 512 here).
  model.identity_dim = 512
  # Size of the facial-dynamics latent z_dyn (VASA-1 does not say; 256).
  model.dyn_dim = 256
  # Padding of the trilinear warps: "border" replicates edge voxels, "zeros" fades to 0.
  model.warp_padding = "border"

  # Appearance encoder: 2D residual stages (the first at full resolution, each later one halving
  # it: len - 1 halvings, 3 -> the volume is H/8), 1x1 conv to C*D, reshape, 3D residual blocks.
  model.appearance = ml_collections.ConfigDict()
  model.appearance.stage_channels = (64, 128, 256, 512)  # MegaPortraits' 2D widths
  model.appearance.blocks_per_stage = 2  # 2D residual blocks per stage
  model.appearance.volume_blocks = 6  # 3D residual blocks on the volume

  # Identity encoder: a ResNet-style network (here ResNet-34 depth) globally pooled to z_id.
  model.identity = ml_collections.ConfigDict()
  model.identity.stage_channels = (64, 128, 256, 512)  # every stage halves the resolution
  model.identity.blocks_per_stage = 3  # residual blocks per stage
  model.identity.input_size = 256  # images are resized to this first (0: as given)

  # Motion encoder: two ResNet-18-style networks, one for z_pose and one for z_dyn.
  model.motion = ml_collections.ConfigDict()
  model.motion.stage_channels = (64, 128, 256, 512)  # ResNet-18 widths
  model.motion.blocks_per_stage = 2  # ResNet-18 depth
  model.motion.input_size = 256  # images are resized to this first (0: as given)
  model.motion.max_rotation = 1.5  # |yaw|, |pitch|, |roll| < this (radians), tanh-bounded
  model.motion.max_translation = 0.5  # |tx|, |ty|, |tz| < this (normalised coordinates)
  model.motion.max_log_scale = 0.5  # |log scale| < this
  # Readout of the backbones: "mean" global average (ResNet-18) or "flatten" (every position).
  model.motion.pooling = "mean"

  # Warping generators (source->canonical and canonical->driver, same architecture): a dense
  # seed grid at the volume size / 2^(levels - 1), adaptive-group-norm 3D residual blocks
  # conditioned on [z_dyn, z_id], 2x upsampling between levels, zero-initialised flow output.
  model.warping = ml_collections.ConfigDict()
  model.warping.seed_channels = 64  # channels of the dense seed grid
  # Channels of each level, coarsest first (seed grid 2 x 8 x 8 at 512, 2 x 4 x 4 at 256).
  model.warping.level_channels = (256, 128, 64, 32)
  model.warping.blocks_per_level = 2  # residual blocks per level
  model.warping.max_flow = 0.25  # bound of each flow component (normalised units, tanh)

  # G3D: a 3D U-Net on the canonical volume (each level halves D, H, W), identity at init.
  model.canonical = ml_collections.ConfigDict()
  model.canonical.level_channels = (128, 256, 512)  # finest first
  model.canonical.blocks_per_level = 2  # residual blocks per level, encoder and decoder each

  # G2D: orthographic projection (D*C -> channels, 1x1 conv), residual blocks, upsampling.
  model.decoder = ml_collections.ConfigDict()
  model.decoder.channels = 512  # width at the volume resolution
  model.decoder.residual_blocks = 8  # MegaPortraits: 8
  # Channels after each 2x upsampling: as many as the appearance encoder's halvings.
  model.decoder.upsample_channels = (256, 128, 64)
  # G2D's residual blocks use adaptive group norm on z_dyn (a direct path from the dynamics code
  # to the rendered mouth and eyes, besides the canonical->driver flow). MegaPortraits: off.
  model.decoder.sees_dyn = False
  return model


def _shrink_to_tiny(model: ml_collections.ConfigDict) -> None:
  """Narrow layers and single residual blocks; the volume is 8 channels x 4 x 8 x 8 at 64 px."""
  model.dtype = "float32"  # the CPU-validated recipes of tiny, small and demo, on any device
  model.num_groups = 4
  model.volume_channels = 8
  model.volume_depth = 4
  model.identity_dim = 32
  model.dyn_dim = 16
  model.appearance.update(stage_channels=(8, 16, 16, 32), blocks_per_stage=1, volume_blocks=1)
  model.identity.update(stage_channels=(8, 16, 32), blocks_per_stage=1, input_size=0)
  model.motion.update(stage_channels=(8, 16, 32), blocks_per_stage=1, input_size=0)
  model.warping.update(seed_channels=8, level_channels=(16, 8), blocks_per_level=1)
  model.canonical.update(level_channels=(8, 16), blocks_per_level=1)
  model.decoder.update(channels=32, residual_blocks=1, upsample_channels=(16, 8, 8))


def _widen_volume_to_quarter(model: ml_collections.ConfigDict) -> None:
  """`small`: tiny's widths, two encoder halvings so the volume is 8 x 4 x 16 x 16 at 64 px."""
  model.appearance.update(stage_channels=(8, 16, 32))
  model.warping.update(level_channels=(16, 8, 8))
  model.decoder.update(upsample_channels=(16, 8))
  # At 64 px the mouth covers a few pixels of the 8 x 8 final map, which the global mean loses;
  # the flattened readout keeps every position (see experiments/LOG.md, "Stage-1 screen:
  # mean-pooled vs flattened motion-encoder readout").
  model.motion.pooling = "flatten"


def get_config(arg=None) -> ml_collections.ConfigDict:
  """Stage-1 config; `arg` is the variant (VARIANTS; "paper" by default)."""
  variant = arg or "paper"
  if variant not in VARIANTS:
    raise ValueError(f"unknown configs/latent.py variant {variant!r}; choose one of {VARIANTS}")
  config = base_config.base_config()
  config.stage = "latent"
  # Resolution of the square face crops fed to the model (and produced by it).
  size = _SIZES[variant]
  config.image_size = {"512": 512, "256": 256, "tiny": 64}[size]
  config.model = model_config(config.get_ref("image_size"))
  if size == "tiny":
    _shrink_to_tiny(config.model)
  if variant in ("small", "demo"):
    _widen_volume_to_quarter(config.model)
  # `small` and `demo` train like `tiny` (same batch, discriminator), with their own recipe.
  _add_training_fields(config, size)
  if not variant.startswith("paper"):
    _use_extended_recipe(config)
  if variant in ("small", "demo"):
    _use_cpu_check_recipe(config)
  if variant == "demo":
    _use_demo_recipe(config)
  return config


def _use_extended_recipe(config: ml_collections.ConfigDict) -> None:
  """The additions to the papers' recipe found on SynthTalk (the fields marked ADDITION in
  `_add_training_fields`, each with its evidence): `extended`, `extended_256` and the CPU
  variants, which were measured with them."""
  config.loss.l1 = 10.0  # a pixel term beside the perceptual ones
  config.loss.head_pose = 10.0  # z_pose's rotation against the annotated head pose
  config.loss.expression = 10.0  # z_dyn's first entries against the measured expression
  config.loss.transfer_cycle = 2.0  # the dynamics transfer re-read as dyn_j
  config.loss.pose_decorrelation = 10.0  # z_dyn's free entries uncorrelated with z_pose


def _use_demo_recipe(config: ml_collections.ConfigDict) -> None:
  """`demo`: `small` made wider and leaner for the length `python -m vasa_jax.demo` trains it.

  Wider layers where the face is drawn (volume, canonical U-Net, decoder) and only the loss terms
  whose renders a step needs anyway, which halves the step time of `small`; per step it draws the
  mouth about as well and the face sharper (experiments/LOG.md, "Lip sync on the pixels").
  """
  config.total_steps = 1_200  # the cosine decay ends here
  config.checkpoint_every_steps = 400
  config.eval_every_steps = 400
  config.model.volume_channels = 32  # appearance-volume channels (small: 8)
  config.model.appearance.stage_channels = (16, 32, 64)  # appearance-encoder widths (small: 8..32)
  config.model.canonical.level_channels = (32, 32)  # G3D widths (small: 8, 16)
  config.model.decoder.channels = 64  # decoder width at the volume's resolution (small: 32)
  config.model.decoder.upsample_channels = (32, 16)  # decoder upsampling widths (small: 16, 8)
  # Off: each needs its own renders (cross-pair, swapped-dynamics, cycle) on top of the
  # reconstruction, the region L1 and the expression terms that carry the demo's lip sync.
  config.loss.pairwise_l1 = 0.0
  config.loss.dynamics_locality = 0.0
  config.loss.identity_cycle = 0.0


def _use_cpu_check_recipe(config: ml_collections.ConfigDict) -> None:
  """`small`'s training: the recipe of the CPU learning checks (experiments/*_synthtalk.py)."""
  config.total_steps = 4_000  # ~50 minutes on 2 CPU cores; the cosine decay ends here
  config.optimizer.learning_rate = 1e-3  # a higher peak than the papers' 2e-4 for a short run
  # GAN terms off: within a few thousand steps the tiny discriminator only adds texture noise.
  config.loss.adversarial = 0.0
  config.loss.feature_matching = 0.0
  # The mouth is a few pixels at 64 px: G2D also modulates on z_dyn, and the driver's mouth and
  # eye boxes get their own L1, so that the decoder draws expression from the dynamics code.
  config.model.decoder.sees_dyn = True
  config.loss.region_l1 = 10.0
  # So that a z_dyn swap leaves the rest of the source frame as it is: colour jitter of the
  # motion encoder's inputs, the identity cycle and the locality of the dynamics transfer (see
  # experiments/LOG.md, "Stage-1 run: no-norm decoder, jitter, identity cycle, dynamics
  # locality (2bcfe3d)" and "Stage-1 run: locality on both dynamics transfers, weight 30
  # (43726bb)").
  config.motion_colour_jitter = 0.4
  config.loss.identity_cycle = 5.0
  config.loss.dynamics_locality = 30.0
  # z_dyn is the mouth opening alone, the one facial dynamic a 64 px frame shows (the eyes are
  # ~3 px tall): free entries carry the other speaker's looks, which a cross-speaker swap paints
  # onto the source, and entries for the lids and the gaze in the head read the speaker's eye
  # shape instead (see experiments/LOG.md, "Stage-1 screens: dyn_dim 4; G2D on the supervised
  # entries only", "Stage-1 run: detached expression codes (ad0d068)" and "Stage-1 check passes:
  # :small's z_dyn is the mouth opening alone (b271b1c)"). The cosine cycles have no gradient on
  # a 1-entry code: off. The decorrelation keeps head pose out of the entry (SynthTalk's
  # expression factors are drawn independently of the head pose).
  config.model.dyn_dim = 1
  config.loss.expression_measures = ("mouth_opening",)
  config.loss.cycle = 0.0
  config.loss.transfer_cycle = 0.0
  config.loss.decorrelate_expression = True
  # The entry reads the measure: the renders' gradient does not reach it, so that a speaker's
  # looks cannot shift it (a per-speaker offset a same-speaker swap cancels and a cross-speaker
  # one paints on; see experiments/LOG.md, "Stage-1 run: detached expression codes (ad0d068)").
  config.loss.detach_expression_codes = True


def _add_training_fields(config: ml_collections.ConfigDict, variant: str) -> None:
  """Optimisation, losses, discriminator, pretrained networks and data of `trainers/latent`."""
  # MegaPortraits: the 256 model trains 200k iterations at batch 24, the 512 one 300k at 16.
  config.total_steps = {"512": 300_000, "256": 200_000, "tiny": 2_000}[variant]
  config.batch_size = {"512": 16, "256": 24, "tiny": 8}[variant]
  config.log_every_steps = {"512": 100, "256": 100, "tiny": 20}[variant]
  config.checkpoint_every_steps = {"512": 5_000, "256": 5_000, "tiny": 500}[variant]
  config.eval_every_steps = {"512": 5_000, "256": 5_000, "tiny": 500}[variant]
  # Decay of the exponential moving average of the generator's weights (evaluated and exported):
  # the most it reaches; it warms up as min(ema_decay, (1 + step) / (10 + step))
  # (`vasa_jax.training.ema`), so early checkpoints already hold mostly trained weights.
  config.ema_decay = 0.999
  # Colour jitter of every frame the motion encoder reads in training (`trainers.latent.
  # jitter_colours`: per-channel gain exp(U(-s, s)) and offset U(-s/2, s/2), each image its own;
  # appearance encoder and targets see the frames unchanged). ADDITION (0.4, in `small`/`demo`
  # only), 0 = off: source and driver share colours and background, so without it z_pose /
  # z_dyn may carry the driver's colours, which a cross-speaker swap then paints onto the source
  # (see experiments/LOG.md, "Stage-1: where the cross-speaker loss comes from; colour jitter
  # and identity cycle (b7b69f5)").
  config.motion_colour_jitter = 0.0

  # AdamW with a cosine decay (MegaPortraits: 2e-4 -> 1e-6); generator and discriminator alike.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2e-4  # peak learning rate
  config.optimizer.final_learning_rate = 1e-6  # reached at total_steps
  config.optimizer.b1 = 0.5  # Adam beta1 (the papers are silent; 0.5 is the usual GAN choice)
  config.optimizer.b2 = 0.999  # Adam beta2
  config.optimizer.eps = 1e-8  # Adam epsilon
  config.optimizer.weight_decay = 1e-2  # AdamW decoupled weight decay
  config.optimizer.grad_clip_norm = 1.0  # gradients clipped to this global norm

  # Loss weights (0 turns a term off). As published: MegaPortraits' values where it gives them
  # (docs/architecture.md, "The paper's recipe and this project's additions"); VASA-1 gives no
  # weights for its two additions (pairwise transfer, cross-identity
  # ArcFace), so those are this project's choices. The terms marked ADDITION are off here and on
  # in `extended`, `tiny`, `small` and `demo` (`_use_extended_recipe`), with the weight given.
  config.loss = ml_collections.ConfigDict()
  # ADDITION (10): L1 between the reenacted image and the driver frame. MegaPortraits' base model
  # has no pixel term (its MAE, weight 100, is in the high-resolution stage only); without the
  # pretrained networks it is what draws a face at all on a CPU.
  config.loss.l1 = 0.0
  config.loss.vgg = 20.0  # VGG19 perceptual (MegaPortraits: 20); needs pretrained.vgg19
  config.loss.face = 4.0  # face perceptual on ArcFace features, standing in for MegaPortraits'
  #                         VGGFace term (weight 4); needs pretrained.arcface
  # MegaPortraits' gaze loss (weight 5): L1 between the gaze network's feature maps and gaze
  # outputs on the driver's eyes in the reenacted image and in the driver frame
  # (perceptual.gaze_loss; the network is MPIIGaze's LeNet, MegaPortraits names none); needs
  # pretrained.gaze.
  config.loss.gaze = 5.0
  config.loss.adversarial = 1.0  # hinge GAN, generator side (MegaPortraits: 1)
  config.loss.feature_matching = 40.0  # discriminator feature matching (MegaPortraits: 40)
  config.loss.cycle = 2.0  # cycle consistency of dynamics codes, CosFace form (MegaPortraits: 2)
  config.loss.cycle_scale = 5.0  # CosFace s (MegaPortraits: 5)
  config.loss.cycle_margin = 0.2  # CosFace m (MegaPortraits: 0.2)
  config.loss.pairwise_l1 = 10.0  # VASA-1 pose/dynamics transfer: L1 between the two renders
  config.loss.pairwise_vgg = 10.0  # the same pair, VGG19 perceptual; needs pretrained.vgg19
  config.loss.identity = 5.0  # VASA-1 cross-identity ArcFace cosine distance; needs arcface
  # ADDITION (10): L1 (radians) of z_pose's yaw/pitch/roll against the data's annotated head
  # pose (the data-preparation tracker's estimate). It anchors z_pose to the real head rotation
  # as MegaPortraits-style models do with a head-pose estimator, so that a pose code means the
  # same rotation for every identity and the rigid warp, not z_dyn, carries head motion (see
  # experiments/LOG.md, "Stage-1 runs 1 and 2: the head-pose term").
  config.loss.head_pose = 0.0
  # ADDITION (10): L1 of z_dyn's first entries against the expression measured from the
  # annotations (mouth and eye opening from the landmarks, gaze relative to the head;
  # input_pipeline.expression_measures), one entry per name in `expression_measures`. The
  # dynamics counterpart of head_pose: without it the small model's z_dyn held head-pose
  # residuals and no mouth opening, which stage 2 then cannot drive (see experiments/LOG.md,
  # "Stage-1 run: expression and transfer-cycle terms, flattened readout").
  config.loss.expression = 0.0
  # The measures z_dyn's first entries carry under `expression`, in order (names of
  # input_pipeline.EXPRESSION_NAMES; z_dyn needs at least as many entries).
  config.loss.expression_measures = ("mouth_opening", "eye_opening", "gaze_theta_in_head",
                                     "gaze_phi_in_head")
  # Under `expression`, z_dyn's supervised entries carry (measure - centre) / spread, so that
  # they vary by about 1 like the free entries (the raw ratios vary by ~0.05). Order of
  # input_pipeline.EXPRESSION_NAMES: mouth opening / width, eye aspect ratio over the clip's
  # open-eye one, gaze theta and phi in the head (radians); centres and spreads near the means
  # and standard deviations of SynthTalk's training frames (fitted there: refit them on other
  # data). With the raw ratios the decoder drew almost no mouth from z_dyn (see
  # experiments/LOG.md, "Stage-1 run: standardised expression targets (db8c7e9)").
  config.loss.expression_centre = (0.1, 1.0, 0.0, 0.0)
  config.loss.expression_spread = (0.1, 0.15, 0.1, 0.1)
  # ADDITION (2): cycle of the pairwise transfer: the motion encoder re-reads D(V_i, z_id_i,
  # pose_i, dyn_j) and its dynamics code should be dyn_j (CosFace like `cycle`). It penalises a
  # z_dyn that carries the driver's head pose, which the same-pose `cycle` cannot see (see
  # experiments/LOG.md, "Stage-1 run: expression and transfer-cycle terms, flattened readout").
  config.loss.transfer_cycle = 0.0
  # ADDITION (10): mean squared batch correlation of z_dyn's free entries (all but the
  # expression-supervised ones) with z_pose (losses.latent.cross_correlation; z_pose's gradient
  # stopped). It keeps head pose out of z_dyn; it assumes expressions independent of the head
  # pose, as SynthTalk draws them (see experiments/LOG.md, "Stage-1 screens: the pose
  # decorrelation term").
  config.loss.pose_decorrelation = 0.0
  # Whether the decorrelation also acts on the expression-supervised entries (all of z_dyn). Off
  # but in `small`/`demo`: in real video the gaze relative to the head often follows the head
  # (eyes kept on the camera while it turns), which that would fight. `small`'s 1-entry z_dyn
  # has no free entries (see experiments/LOG.md, "Stage-1 run: decorrelation on all of z_dyn").
  config.loss.decorrelate_expression = False
  # Whether the renders see z_dyn's expression-supervised entries with their gradient stopped
  # (trainers.latent.detached_entries), so that those entries learn from `expression` (and the
  # cycles' re-reads) alone and the reconstruction terms cannot make them carry the speaker's
  # looks. Off but in `small`/`demo`: real expressions hold more than the four measures, which
  # the renders' gradient then shapes (see experiments/LOG.md, "Stage-1 run: detached
  # expression codes (ad0d068)").
  config.loss.detach_expression_codes = False
  # ADDITION (10, in `small`/`demo` only): L1 between the reenacted image and the driver over the
  # driver's mouth and eye boxes only (input_pipeline.face_region_mask, from the tracker's
  # landmarks; ~13% of a 64 px crop), on top of the whole-image `l1`. It weights the pixels
  # where facial dynamics show (see experiments/LOG.md, "Stage-1 run: G2D modulated on z_dyn,
  # mouth/eye-box L1 (b7cd4b7)").
  config.loss.region_l1 = 0.0
  # ADDITION (30, in `small` only): L1 between the dynamics transfers D(V_i, z_id_i, pose_i,
  # dyn_j) and D(V_i, z_id_i, pose_i, dyn_d) (the other speaker's dynamics; a fifth decode while
  # this is on) and the source frame I_i outside the source's eyes and lower face
  # (input_pipeline.expression_region_mask, ~1/3 of a crop): they keep pose i, so only the
  # expression may differ from I_i, and only there. Without it, a z_dyn swap also repainted
  # colours and outlines across the frame (see experiments/LOG.md, "Stage-1 run: no-norm
  # decoder, jitter, identity cycle, dynamics locality (2bcfe3d)" and "Stage-1 run: locality on
  # both dynamics transfers, weight 30 (43726bb)"). Real expressions also move cheeks and brows a
  # little, which this term resists: off at paper size.
  config.loss.dynamics_locality = 0.0
  # ADDITION (5, in `small` only): cosine distance between the source's z_id and the z_id that
  # the model's own identity encoder (its weights frozen for this read) reads from the
  # cross-identity reenactment; a stand-in for `identity` where no ArcFace weights exist: nothing
  # else stops a cross-speaker z_pose / z_dyn from carrying the driver's looks into the render
  # (see experiments/LOG.md, "Stage-1: where the cross-speaker loss comes from; colour jitter and
  # identity cycle (b7b69f5)").
  config.loss.identity_cycle = 0.0

  # Multi-scale patch discriminator (pix2pixHD style).
  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.num_scales = {"tiny": 2}.get(variant, 3)  # image scales (x1, x1/2, ...)
  config.discriminator.base_features = {"tiny": 8}.get(variant, 64)  # first conv's channels
  config.discriminator.num_layers = {"tiny": 2}.get(variant, 3)  # stride-2 convs per scale
  config.discriminator.max_features = 512  # channel cap
  config.discriminator.instance_norm = True  # instance norm in hidden layers

  # Pretrained networks of the perceptual terms: `.npz` files written by
  # `python -m data_prep.convert_weights` from the released torchvision / arcface_torch weights.
  # Empty: the terms that need them are off (the run log lists them).
  config.pretrained = ml_collections.ConfigDict()
  config.pretrained.vgg19 = ""  # converted torchvision vgg19 weights
  config.pretrained.arcface = ""  # converted arcface_torch IResNet backbone
  config.pretrained.arcface_depth = 100  # that backbone's depth (50 or 100 for the releases)
  # Converted MPIIGaze LeNet gaze estimator (`--kind=gaze`) of the gaze loss; without it the
  # gaze term is off and the run log says so in one line.
  config.pretrained.gaze = ""

  # Data: stage-1 samples (source and driver frames of a clip, a frame of another speaker).
  config.data.train_split = "train"  # split trained on
  config.data.eval_split = "test"  # held-out split of the evaluation grids and PSNR
  config.data.eval_batch_size = 8  # examples in the fixed evaluation batch
  config.data.augment = ml_collections.ConfigDict()  # see input_pipeline.Augmentation
  config.data.augment.flip_prob = 0.5  # horizontal flips (source and driver flip together)
  config.data.augment.brightness = 0.1  # +-10% brightness
  config.data.augment.contrast = 0.1  # +-10% contrast
  config.data.augment.saturation = 0.1  # +-10% saturation
  config.data.augment.scale = 0.05  # +-5% zoom of the crop
  config.data.augment.shift = 0.03  # +-3% shift of the crop centre
  # Grain worker processes decoding examples: one decodes ~100 examples/s at 512 px and ~400 at
  # 256 px (experiments/bench_input_pipeline.py); the CPU-sized variants decode in the trainer.
  config.data.num_workers = {"512": 4, "256": 4, "tiny": 0}[variant]
