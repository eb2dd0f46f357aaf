"""Stage 1: trains the face latent autoencoder (`configs/latent.py`).

  python -m vasa_jax.train --config=configs/latent.py:tiny --workdir=/tmp/latent \
      --config.data_dir=/tmp/vasa_demo/synthtalk

Each step takes a source frame I_i and a driver frame I_j of one clip and a frame I_d of another
speaker, and decodes, in one batched pass of the decoder, those of these images that the active
loss terms read (`renders_needed`; a term that is off costs no decode):
  reenacted          D(V_i, z_id_i, pose_j, dyn_j)  -> should be I_j (reconstruction terms, GAN)
  pose_transfer      D(V_j, z_id_j, pose_i, dyn_j)  } VASA-1's pairwise transfer loss: both show
  dynamics_transfer  D(V_i, z_id_i, pose_i, dyn_j)  } pose i and dynamics j, so they should agree
  cross_reenacted    D(V_i, z_id_i, pose_d, dyn_d)  -> should keep I_i's identity (ArcFace cosine)
The reenactment's L1 is also taken over the driver's mouth and eye boxes alone
(`config.loss.region_l1`), where facial dynamics show; `dynamics_transfer` keeps the source's
pose, so outside the source's eyes and lower face it should be the source frame I_i, and so
should a fifth decode, D(V_i, z_id_i, pose_i, dyn_d), with the other speaker's dynamics
(`config.loss.dynamics_locality`). The rotation part of z_pose is also
pulled towards the data's annotated head pose (the data-preparation tracker's estimate;
`config.loss.head_pose`), and the first entries of z_dyn towards the expression measured from
the tracker's landmarks and gaze (those of mouth and eye opening and gaze in the head that
`config.loss.expression_measures` names, each standardised to a spread of about 1 like the free
entries; `config.loss.expression`; with
`config.loss.detach_expression_codes` the renders' terms leave those entries to it). Without
ArcFace weights, the model's own identity encoder (frozen for that read) can stand in for the
identity term:
`cross_reenacted` should re-read as z_id_i (`config.loss.identity_cycle`). The motion encoder
re-reads `reenacted` and `cross_reenacted`: their dynamics codes should match the drivers'
(MegaPortraits' cycle consistency, CosFace form over the batch; `config.loss.cycle`); it also
re-reads `dynamics_transfer`, which shows dyn_j under pose i: its dynamics code should still be
dyn_j, which penalises a z_dyn that carries the driver's head pose
(`config.loss.transfer_cycle`). Every frame the motion encoder reads in training (the three
inputs and the re-read renders) can get its own random colour jitter
(`config.motion_colour_jitter`), so that the motion codes cannot carry the frame's colours,
which source and driver share. The discriminator trains on I_j against `reenacted` with the
hinge loss. MegaPortraits' gaze loss compares a gaze network's readings (MPIIGaze's LeNet,
`vasa_jax.models.gaze`) of the driver's eyes in `reenacted` and in I_j (`config.loss.gaze`).
Terms that need a pretrained network (VGG19 perceptual, ArcFace face perceptual and identity,
gaze) are on only when `config.pretrained` names its weight file; the log says which terms are
off and why, one line each.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vasa_jax.data import input_pipeline
from vasa_jax.models import pretrained
from vasa_jax.losses import latent as latent_losses
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import discriminator as discriminator_lib
from vasa_jax.models import gaze as gaze_lib
from vasa_jax.models import iresnet
from vasa_jax.models import layers
from vasa_jax.models import perceptual
from vasa_jax.models import vgg
from vasa_jax.training import ema
from vasa_jax.training import loop
from vasa_jax.training import sharding as sharding_lib

# Loss terms and the pretrained network each needs (None: none).
TERM_NETWORK = {
    "l1": None, "vgg": "vgg19", "face": "arcface", "adversarial": None,
    "feature_matching": None, "cycle": None, "pairwise_l1": None, "pairwise_vgg": "vgg19",
    "identity": "arcface", "head_pose": None, "expression": None, "transfer_cycle": None,
    "pose_decorrelation": None, "region_l1": None, "identity_cycle": None,
    "dynamics_locality": None, "gaze": "gaze",
}


@flax.struct.dataclass
class LatentTrainState:
  step: jax.Array  # [] int32
  generator: Any  # FaceAutoencoder parameters
  discriminator: Any  # MultiScaleDiscriminator parameters
  generator_opt_state: Any
  discriminator_opt_state: Any
  ema_generator: Any  # exponential moving average of `generator`


@dataclasses.dataclass(frozen=True)
class Networks:
  """The modules of stage 1 (the perceptual ones only when their weights are given)."""
  autoencoder: autoencoder_lib.FaceAutoencoder
  discriminator: discriminator_lib.MultiScaleDiscriminator
  vgg: Optional[vgg.VGG19]
  arcface: Optional[iresnet.IResNet]
  gaze: Optional[gaze_lib.GazeLeNet]

  @classmethod
  def from_config(cls, config) -> "Networks":
    dtype = layers.compute_dtype(config.model.dtype)
    return cls(
        autoencoder=autoencoder_lib.FaceAutoencoder.from_config(config.model),
        discriminator=discriminator_lib.MultiScaleDiscriminator(
            **config.discriminator.to_dict(), dtype=dtype),
        vgg=vgg.VGG19(dtype=dtype) if config.pretrained.vgg19 else None,
        arcface=iresnet.iresnet(config.pretrained.arcface_depth, dtype=dtype)
        if config.pretrained.arcface else None,
        gaze=gaze_lib.GazeLeNet(dtype=dtype) if config.pretrained.gaze else None)


def loss_weights(config) -> dict[str, float]:
  """`config.loss` weights with the terms whose pretrained network is missing set to 0.

  Raises ValueError for a decorrelation term left no z_dyn entries to act on
  (`undecorrelated_entries`), for detached expression entries without the expression term
  (`detached_entries`), for a z_dyn shorter than its measures (`expression_columns`) and for
  the cosine cycles on a 1-entry z_dyn.
  """
  available = {None: True, "vgg19": bool(config.pretrained.vgg19),
               "arcface": bool(config.pretrained.arcface), "gaze": bool(config.pretrained.gaze)}
  weights = {}
  for term, network in TERM_NETWORK.items():
    weight = float(config.loss[term])
    if weight and not available[network]:
      logging.warning("loss term %r (weight %g) is OFF: config.pretrained.%s names no weight "
                      "file", term, weight, network)
      weight = 0.0
    weights[term] = weight
  skipped = undecorrelated_entries(config, weights)
  if weights["pose_decorrelation"] and config.model.dyn_dim <= skipped:
    raise ValueError(
        f"loss.pose_decorrelation ({weights['pose_decorrelation']:g}) acts on z_dyn's free "
        f"entries, but model.dyn_dim {config.model.dyn_dim} leaves none beside the "
        f"{skipped} expression-supervised ones: raise model.dyn_dim, set "
        "loss.decorrelate_expression=True or set loss.pose_decorrelation=0")
  if detached_entries(config) and not weights["expression"]:
    raise ValueError("loss.detach_expression_codes stops the renders' gradient into z_dyn's "
                     "expression entries, which then learn from loss.expression: it is 0")
  supervised = len(expression_columns(config))
  if weights["expression"] and config.model.dyn_dim < supervised:
    raise ValueError(f"loss.expression_measures names {supervised} measures for z_dyn's first "
                     f"entries, but model.dyn_dim is {config.model.dyn_dim}")
  cycles = [term for term in ("cycle", "transfer_cycle") if weights[term]]
  if cycles and config.model.dyn_dim < 2:
    raise ValueError(f"loss.{' and loss.'.join(cycles)} compare z_dyn codes by their cosine, "
                     f"which a {config.model.dyn_dim}-entry code reduces to its sign (no "
                     "gradient): raise model.dyn_dim or set them to 0")
  return weights


def expression_columns(config) -> list[int]:
  """Columns of `input_pipeline.expression_measures` that z_dyn's first entries carry, in
  order: `config.loss.expression_measures` as indices into `input_pipeline.EXPRESSION_NAMES`.
  Raises ValueError for an unknown or repeated name, and for `expression_centre` /
  `expression_spread` not holding one value per `EXPRESSION_NAMES` entry."""
  names = tuple(config.loss.expression_measures)
  unknown = [name for name in names if name not in input_pipeline.EXPRESSION_NAMES]
  if unknown or len(set(names)) != len(names):
    raise ValueError(f"loss.expression_measures {names} must name distinct measures among "
                     f"{input_pipeline.EXPRESSION_NAMES}; unknown: {unknown}")
  for field in ("expression_centre", "expression_spread"):
    if len(config.loss[field]) != input_pipeline.EXPRESSION_SIZE:
      raise ValueError(f"loss.{field} has {len(config.loss[field])} values, not one per "
                       f"measure of {input_pipeline.EXPRESSION_NAMES}")
  return [input_pipeline.EXPRESSION_NAMES.index(name) for name in names]


def detached_entries(config) -> int:
  """How many leading z_dyn entries reach the renders with their gradient stopped: the
  expression-supervised ones with `config.loss.detach_expression_codes`, else none."""
  return len(expression_columns(config)) if config.loss.detach_expression_codes else 0


def undecorrelated_entries(config, weights: dict[str, float]) -> int:
  """How many leading z_dyn entries the pose decorrelation leaves alone: the expression-
  supervised ones, unless `config.loss.decorrelate_expression`."""
  if config.loss.decorrelate_expression or not weights["expression"]:
    return 0
  return len(expression_columns(config))


def load_frozen(config) -> dict[str, Any]:
  """The pretrained loss networks' variables ({"vgg19": ..., "arcface": ..., "gaze": ...}, each
  None without its weight file)."""
  return {
      "vgg19": pretrained.load_vgg19(config.pretrained.vgg19) if config.pretrained.vgg19
      else None,
      "arcface": pretrained.load_iresnet(config.pretrained.arcface,
                                         config.pretrained.arcface_depth)
      if config.pretrained.arcface else None,
      "gaze": pretrained.load_gaze(config.pretrained.gaze) if config.pretrained.gaze else None,
  }


def make_optimizer(optimizer_config, total_steps: int) -> optax.GradientTransformation:
  """Clipped AdamW with a cosine decay from `learning_rate` to `final_learning_rate`."""
  schedule = optax.cosine_decay_schedule(
      optimizer_config.learning_rate, max(total_steps, 1),
      alpha=optimizer_config.final_learning_rate / optimizer_config.learning_rate)
  return optax.chain(
      optax.clip_by_global_norm(optimizer_config.grad_clip_norm),
      optax.adamw(schedule, b1=optimizer_config.b1, b2=optimizer_config.b2,
                  eps=optimizer_config.eps, weight_decay=optimizer_config.weight_decay))


def to_model_range(images: jax.Array) -> jax.Array:
  """uint8 [B, S, S, 3] -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def jitter_colours(images: jax.Array, rng: Optional[jax.Array], strength: float) -> jax.Array:
  """Each image's channels scaled by exp(U(-strength, strength)) and shifted by
  U(-strength / 2, strength / 2) (in [0, 1] units), independently per image and channel, then
  clipped: [N, S, S, 3] in [-1, 1] -> the same. strength 0 returns `images` unchanged."""
  if not strength:
    return images
  gain_rng, offset_rng = jax.random.split(rng)
  shape = (images.shape[0], 1, 1, images.shape[-1])
  gain = jnp.exp(jax.random.uniform(gain_rng, shape, minval=-strength, maxval=strength))
  offset = jax.random.uniform(offset_rng, shape, minval=-strength / 2, maxval=strength / 2)
  return jnp.clip(((images + 1.0) / 2.0 * gain + offset) * 2.0 - 1.0, -1.0, 1.0)


# The images a step can decode (see the module doc), in decoding order.
RENDERS = ("reenacted", "pose_transfer", "dynamics_transfer", "cross_reenacted",
           "cross_dynamics_transfer")


def renders_needed(weights: dict[str, float]) -> tuple[str, ...]:
  """The decodes the active loss terms read (`reenacted` always): a term that is off costs no
  decode, so a recipe with fewer terms trains faster per step."""
  needed = {"reenacted"}
  if weights["pairwise_l1"] or weights["pairwise_vgg"]:
    needed |= {"pose_transfer", "dynamics_transfer"}
  if weights["transfer_cycle"]:
    needed.add("dynamics_transfer")
  if weights["dynamics_locality"]:
    needed |= {"dynamics_transfer", "cross_dynamics_transfer"}
  if weights["identity"] or weights["identity_cycle"] or weights["cycle"]:
    needed.add("cross_reenacted")
  return tuple(name for name in RENDERS if name in needed)


def generator_outputs(autoencoder: autoencoder_lib.FaceAutoencoder, params: Any,
                      source: jax.Array, driver: jax.Array, cross_identity: jax.Array,
                      colour_jitter: float = 0.0,
                      rng: Optional[jax.Array] = None,
                      renders: tuple[str, ...] = RENDERS[:4],
                      detached_dyn_entries: int = 0) -> dict[str, jax.Array]:
  """The decoded images `renders` (names of RENDERS) of a step plus the codes they came from
  (see the module doc).

  With `colour_jitter` > 0 the motion encoder reads the frames through `jitter_colours` (drawn
  from `rng`); the appearance encoder and the targets see them unchanged. The motion encoder
  reads the cross-identity frame, and the appearance encoder the driver, only when a render
  needs them; `z_pose` and `z_dyn` are [F * B, .] for the F frames read (source, driver, and the
  cross-identity frame when read, in that order). The first `detached_dyn_entries` entries of
  z_dyn enter the appearance encoder and the decoder with their gradient stopped
  (`detached_entries`); the returned `z_dyn` keeps it.
  """
  unknown = set(renders) - set(RENDERS)
  if unknown or "reenacted" not in renders:
    raise ValueError(f"renders must include 'reenacted' and come from {RENDERS}, got {renders}")
  variables = {"params": params}
  batch = source.shape[0]
  reads_cross = bool({"cross_reenacted", "cross_dynamics_transfer"} & set(renders))
  frames = [source, driver] + ([cross_identity] if reads_cross else [])
  z_pose, z_dyn = autoencoder.apply(  # [F * B, 7], [F * B, dyn]
      variables, jitter_colours(jnp.concatenate(frames), rng, colour_jitter),
      method=autoencoder_lib.FaceAutoencoder.encode_motion)
  rendered_dyn = jnp.concatenate(  # [F * B, dyn]
      [jax.lax.stop_gradient(z_dyn[:, :detached_dyn_entries]), z_dyn[:, detached_dyn_entries:]],
      axis=-1)
  pose = jnp.split(z_pose, len(frames))  # pose_i, pose_j (, pose_d)
  dyn = jnp.split(rendered_dyn, len(frames))  # dyn_i, dyn_j (, dyn_d)
  appearance_frames = 2 if "pose_transfer" in renders else 1
  volumes, identities = autoencoder.apply(  # [A * B, D, h, w, C], [A * B, id]
      variables, jnp.concatenate(frames[:appearance_frames]),
      motion=(z_pose[:appearance_frames * batch], rendered_dyn[:appearance_frames * batch]),
      method=autoencoder_lib.FaceAutoencoder.encode_appearance)
  volume = jnp.split(volumes, appearance_frames)  # V_i (, V_j)
  identity = jnp.split(identities, appearance_frames)  # z_id_i (, z_id_j)
  # (V, z_id, z_pose, z_dyn) of each decodable image.
  codes = {"reenacted": lambda: (volume[0], identity[0], pose[1], dyn[1]),
           "pose_transfer": lambda: (volume[1], identity[1], pose[0], dyn[1]),
           "dynamics_transfer": lambda: (volume[0], identity[0], pose[0], dyn[1]),
           "cross_reenacted": lambda: (volume[0], identity[0], pose[2], dyn[2]),
           "cross_dynamics_transfer": lambda: (volume[0], identity[0], pose[0], dyn[2])}
  decoded = autoencoder.apply(  # [len(renders) * B, S, S, 3]
      variables, *(jnp.concatenate(list(parts))
                   for parts in zip(*(codes[name]() for name in renders))),
      method=autoencoder_lib.FaceAutoencoder.decode)
  outputs = dict(zip(renders, jnp.split(decoded, len(renders))))
  outputs.update(driver_dyn=dyn[1], z_pose=z_pose, z_dyn=z_dyn, source_identity=identity[0])
  if reads_cross:
    outputs["cross_identity_dyn"] = dyn[2]
  return outputs


def generator_loss(networks: Networks, weights: dict[str, float], config, params: Any,
                   discriminator_params: Any, frozen: dict[str, Any],
                   images: dict[str, jax.Array],
                   rng: jax.Array) -> tuple[jax.Array, tuple[dict, dict]]:
  """Weighted sum of every active term; returns (total, (terms, outputs))."""
  source, driver = images["source"], images["driver"]
  batch = source.shape[0]
  frames_rng, renders_rng = jax.random.split(rng)
  outputs = generator_outputs(networks.autoencoder, params, source, driver,
                              images["cross_identity"], config.motion_colour_jitter, frames_rng,
                              renders=renders_needed(weights),
                              detached_dyn_entries=detached_entries(config))
  frames_read = outputs["z_pose"].shape[0]  # F * B: the frames the motion encoder read
  reenacted = outputs["reenacted"]
  terms = {"l1": latent_losses.l1(reenacted, driver)}
  if weights["pairwise_l1"]:
    terms["pairwise_l1"] = latent_losses.l1(outputs["pose_transfer"],
                                            outputs["dynamics_transfer"])
  if weights["region_l1"]:
    terms["region_l1"] = latent_losses.masked_l1(reenacted, driver, images["driver_region_mask"])
  if weights["dynamics_locality"]:
    # Both dynamics transfers (the driver's and the other speaker's dyn) show pose i: outside
    # the source's eyes and lower face they are I_i.
    outside = 1 - images["source_expression_mask"]  # [B, S, S]
    terms["dynamics_locality"] = 0.5 * sum(
        latent_losses.masked_l1(outputs[name], source, outside)
        for name in ("dynamics_transfer", "cross_dynamics_transfer"))
  if weights["head_pose"]:
    terms["head_pose"] = latent_losses.head_pose_l1(outputs["z_pose"],
                                                    images["head_pose"][:frames_read])
  if weights["expression"]:
    # The measures z_dyn carries (`expression_columns`), each with its centre and spread.
    columns = expression_columns(config)
    terms["expression"] = latent_losses.expression_l1(
        outputs["z_dyn"], images["expression"][:frames_read, columns],
        [config.loss.expression_centre[column] for column in columns],
        [config.loss.expression_spread[column] for column in columns])
  if weights["pose_decorrelation"]:
    # z_dyn's entries (the free ones, or all: `undecorrelated_entries`) against the pose code.
    skipped = undecorrelated_entries(config, weights)
    terms["pose_decorrelation"] = latent_losses.cross_correlation(
        outputs["z_dyn"][:, skipped:], jax.lax.stop_gradient(outputs["z_pose"]))
  if weights["vgg"]:
    terms["vgg"] = perceptual.vgg_perceptual_loss(frozen["vgg19"], reenacted, driver,
                                                  model=networks.vgg)
  if weights["pairwise_vgg"]:
    terms["pairwise_vgg"] = perceptual.vgg_perceptual_loss(
        frozen["vgg19"], outputs["pose_transfer"], outputs["dynamics_transfer"],
        model=networks.vgg)
  if weights["face"]:
    terms["face"] = perceptual.face_perceptual_loss(frozen["arcface"], reenacted, driver,
                                                    model=networks.arcface)
  if weights["gaze"]:
    terms["gaze"] = perceptual.gaze_loss(frozen["gaze"], reenacted, driver,
                                         images["driver_eye_boxes"], images["driver_head_angles"],
                                         model=networks.gaze)
  if weights["identity"]:
    terms["identity"] = jnp.mean(perceptual.identity_cosine_distance(
        jax.lax.stop_gradient(perceptual.identity_embedding(frozen["arcface"], source,
                                                            model=networks.arcface)),
        perceptual.identity_embedding(frozen["arcface"], outputs["cross_reenacted"],
                                      model=networks.arcface)))
  if weights["identity_cycle"]:
    # The identity term with the model's own identity encoder as the face network, its weights
    # frozen for this re-read: only the render moves to keep the source's z_id.
    reread_identity = networks.autoencoder.apply(  # [B, identity_dim]
        {"params": jax.lax.stop_gradient(params)}, outputs["cross_reenacted"],
        method=autoencoder_lib.FaceAutoencoder.encode_identity)
    terms["identity_cycle"] = jnp.mean(perceptual.identity_cosine_distance(
        jax.lax.stop_gradient(outputs["source_identity"]), reread_identity))
  if weights["adversarial"] or weights["feature_matching"]:
    fake_features, fake_logits = networks.discriminator.apply(
        {"params": discriminator_params}, reenacted)
    real_features, _ = networks.discriminator.apply({"params": discriminator_params}, driver)
    terms["adversarial"] = discriminator_lib.hinge_g_loss(fake_logits)
    terms["feature_matching"] = discriminator_lib.feature_matching_loss(real_features,
                                                                         fake_features)
  if weights["cycle"] or weights["transfer_cycle"]:
    # One pass of the motion encoder re-reads the renders the active cycles compare; pose is
    # explicit, the cycles constrain the dynamics descriptor.
    reread = ((["reenacted", "cross_reenacted"] if weights["cycle"] else [])
              + (["dynamics_transfer"] if weights["transfer_cycle"] else []))
    _, reread_dyn = networks.autoencoder.apply(  # [len(reread) * B, dyn]
        {"params": params},
        jitter_colours(jnp.concatenate([outputs[name] for name in reread]),
                       renders_rng, config.motion_colour_jitter),
        method=autoencoder_lib.FaceAutoencoder.encode_motion)
    driver_dyn = jax.lax.stop_gradient(outputs["driver_dyn"])
    cosface = functools.partial(latent_losses.cosface_loss, scale=config.loss.cycle_scale,
                                margin=config.loss.cycle_margin)
    if weights["cycle"]:
      terms["cycle"] = cosface(reread_dyn[:2 * batch], jnp.concatenate(
          [driver_dyn, jax.lax.stop_gradient(outputs["cross_identity_dyn"])]))
    if weights["transfer_cycle"]:
      # Its own softmax: dyn_j is already the positive of `reenacted`'s rows above.
      terms["transfer_cycle"] = cosface(reread_dyn[-batch:], driver_dyn)
  total = sum(weights[name] * value for name, value in terms.items())
  return total, (terms, outputs)


def discriminator_loss(networks: Networks, params: Any, driver: jax.Array,
                       reenacted: jax.Array) -> jax.Array:
  _, real_logits = networks.discriminator.apply({"params": params}, driver)
  _, fake_logits = networks.discriminator.apply({"params": params},
                                                jax.lax.stop_gradient(reenacted))
  return discriminator_lib.hinge_d_loss(real_logits, fake_logits)


def make_init_state(networks: Networks, config):
  generator_tx = make_optimizer(config.optimizer, config.total_steps)
  discriminator_tx = make_optimizer(config.optimizer, config.total_steps)

  def init_state(rng: jax.Array) -> LatentTrainState:
    generator_rng, discriminator_rng = jax.random.split(rng)
    image = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    generator = networks.autoencoder.init(generator_rng, image, image)["params"]
    discriminator = networks.discriminator.init(discriminator_rng, image)["params"]
    return LatentTrainState(
        step=jnp.zeros((), jnp.int32), generator=generator, discriminator=discriminator,
        generator_opt_state=generator_tx.init(generator),
        discriminator_opt_state=discriminator_tx.init(discriminator),
        ema_generator=generator)
  return init_state, generator_tx, discriminator_tx


def make_train_step(networks: Networks, config, weights: dict[str, float],
                    generator_tx: optax.GradientTransformation,
                    discriminator_tx: optax.GradientTransformation):
  adversarial = bool(weights["adversarial"] or weights["feature_matching"])

  def train_step(state: LatentTrainState, batch: dict, rng: jax.Array, frozen: dict):
    images = {name: to_model_range(batch[f"{name}_image"])
              for name in ("source", "driver", "cross_identity")}
    # Annotated poses in z_pose's order (source, driver, cross frames): [3B, 3] degrees.
    images["head_pose"] = jnp.concatenate(
        [batch[f"{name}_head_pose"] for name in ("source", "driver", "cross_identity")])
    # Their measured expressions (every input_pipeline.EXPRESSION_NAMES entry): [3B, 4].
    images["expression"] = jnp.concatenate(
        [batch[f"{name}_expression"] for name in ("source", "driver", "cross_identity")])
    # Mouth and eye boxes of the driver frame (input_pipeline.face_region_mask) and where
    # expression shows in the source frame (input_pipeline.expression_region_mask): [B, S, S].
    for name in ("driver_region_mask", "source_expression_mask"):
      images[name] = batch[name]
    # The gaze loss's eye boxes of the driver frame (input_pipeline.eye_boxes) [B, 2, 4] and its
    # head (pitch, yaw) in radians [B, 2], the gaze network's second input.
    images["driver_eye_boxes"] = batch["driver_eye_boxes"]
    images["driver_head_angles"] = jnp.deg2rad(batch["driver_head_pose"][:, 1::-1])
    loss_fn = functools.partial(generator_loss, networks, weights, config)
    (total, (terms, outputs)), generator_grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.generator, state.discriminator, frozen, images, rng)
    updates, generator_opt_state = generator_tx.update(
        generator_grads, state.generator_opt_state, state.generator)
    generator = optax.apply_updates(state.generator, updates)
    metrics = {f"loss/{name}": value for name, value in terms.items()}
    metrics["loss/generator_total"] = total
    metrics["generator_grad_norm"] = optax.global_norm(generator_grads)
    metrics["psnr/reenacted"] = jnp.mean(latent_losses.psnr(outputs["reenacted"],
                                                            images["driver"]))
    discriminator, discriminator_opt_state = state.discriminator, state.discriminator_opt_state
    if adversarial:
      d_loss, d_grads = jax.value_and_grad(functools.partial(discriminator_loss, networks))(
          state.discriminator, images["driver"], outputs["reenacted"])
      d_updates, discriminator_opt_state = discriminator_tx.update(
          d_grads, state.discriminator_opt_state, state.discriminator)
      discriminator = optax.apply_updates(state.discriminator, d_updates)
      metrics["loss/discriminator"] = d_loss
    ema_generator = ema.update(state.ema_generator, generator, state.step, config.ema_decay)
    return LatentTrainState(
        step=state.step + 1, generator=generator, discriminator=discriminator,
        generator_opt_state=generator_opt_state,
        discriminator_opt_state=discriminator_opt_state, ema_generator=ema_generator), metrics
  return train_step


def image_grid(rows: list[np.ndarray]) -> np.ndarray:
  """Columns of [B, S, S, 3] images in [-1, 1] -> one uint8 [B*S, len*S, 3] grid."""
  columns = [np.concatenate(list(np.asarray(images)), axis=0) for images in rows]
  return np.clip((np.concatenate(columns, axis=1) + 1.0) * 127.5, 0, 255).astype(np.uint8)


def make_evaluate(networks: Networks, config):
  """Held-out PSNR and SSIM (self-reconstruction and reenactment) and an image grid, with EMA
  weights; beside them the PSNR of each source face's flat mean colour (eval/psnr_mean_colour),
  the trivial baseline a model that draws faces beats (`run_metrics` warns below it + 3 dB).

  Every process reads the same fixed batch; it enters the compiled evaluation as replicated
  arguments (not as constants) and the results come back replicated, so the evaluation runs
  alike on one host or many (process 0's writer writes).
  """
  eval_batch = next(input_pipeline.stage1_iterator(
      config.data_dir, config.data.eval_split, batch_size=config.data.eval_batch_size,
      image_size=config.image_size, seed=config.seed, shuffle=False, process_index=0,
      process_count=1, cross_identity_split=input_pipeline.cross_identity_split(
          config.data_dir, config.data.eval_split, config.data.train_split)))
  host_images = {name: np.asarray(eval_batch[f"{name}_image"])  # uint8 [B, S, S, 3]
                 for name in ("source", "driver", "cross_identity")}
  source = host_images["source"].astype(np.float32) / 127.5 - 1.0  # to_model_range
  mean_colour = np.broadcast_to(source.mean(axis=(1, 2), keepdims=True), source.shape)
  psnr_mean_colour = float(np.mean(latent_losses.psnr(mean_colour, source)))
  compiled = {}  # the jitted evaluation and its replicated images, per mesh

  def evaluate_outputs(params, uint8_images):
    images = {name: to_model_range(value) for name, value in uint8_images.items()}
    outputs = generator_outputs(networks.autoencoder, params, images["source"],
                                images["driver"], images["cross_identity"])
    self_reconstruction = networks.autoencoder.apply(
        {"params": params}, images["source"], images["source"])["reenacted_image"]
    scalars = {
        "eval/psnr_self": jnp.mean(latent_losses.psnr(self_reconstruction, images["source"])),
        "eval/psnr_reenacted": jnp.mean(latent_losses.psnr(outputs["reenacted"],
                                                           images["driver"])),
        "eval/ssim_self": jnp.mean(latent_losses.ssim(self_reconstruction, images["source"])),
        "eval/ssim_reenacted": jnp.mean(latent_losses.ssim(outputs["reenacted"],
                                                           images["driver"]))}
    columns = [images["source"], self_reconstruction, images["driver"], outputs["reenacted"],
               images["cross_identity"], outputs["cross_reenacted"]]
    return scalars, columns

  def evaluate(state: LatentTrainState, step: int, writer) -> None:
    replicated = sharding_lib.replicated_over(state.ema_generator)
    if replicated not in compiled:
      compiled[replicated] = (jax.jit(evaluate_outputs, out_shardings=replicated),
                              sharding_lib.put_replicated(host_images, replicated))
    evaluate_fn, images = compiled[replicated]
    scalars, columns = jax.device_get(evaluate_fn(state.ema_generator, images))
    writer.write_scalars(step, {**{name: float(value) for name, value in scalars.items()},
                                "eval/psnr_mean_colour": psnr_mean_colour})
    writer.write_images(step, {"eval/source_self_driver_reenacted_crossdriver_crossreenacted":
                               image_grid(columns)[None]})
  return evaluate


def make_task(config, process_index: Optional[int] = None,
              process_count: Optional[int] = None) -> loop.Task:
  input_pipeline.check_data_dir(config.data_dir, "clip", "latent")
  networks = Networks.from_config(config)
  weights = loss_weights(config)
  init_state, generator_tx, discriminator_tx = make_init_state(networks, config)
  iterator = input_pipeline.stage1_iterator(
      config.data_dir, config.data.train_split, batch_size=config.batch_size,
      image_size=config.image_size, seed=config.seed,
      augmentation=input_pipeline.Augmentation.from_config(config.data.augment),
      process_index=process_index, process_count=process_count,
      num_workers=config.data.num_workers, prefetch_batches=config.data.prefetch_batches)
  return loop.Task(
      init_state=init_state,
      train_step=make_train_step(networks, config, weights, generator_tx, discriminator_tx),
      train_iterator=iterator, frozen=load_frozen(config),
      evaluate=make_evaluate(networks, config) if config.eval_every_steps else None,
      progress_metrics=("loss/generator_total", "loss/l1", "psnr/reenacted"))


def train_and_evaluate(config, workdir: str, mesh) -> LatentTrainState:
  return loop.train(config, workdir, make_task(config), mesh)
