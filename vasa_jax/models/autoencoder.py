"""VASA-1's face latent autoencoder (stage 1), built on MegaPortraits.

A frame is split into a canonical appearance volume `V_app`, an identity code `z_id`, a head pose
`z_pose` [B, 7] = (yaw, pitch, roll, tx, ty, tz, log_scale) and facial dynamics `z_dyn`; the
decoder renders any combination of them:

  model = FaceAutoencoder.from_config(config.model)
  variables = model.init(rng, source_image, driver_image)
  canonical_volume, z_id = model.apply(variables, image, method=FaceAutoencoder.encode_appearance)
  z_pose, z_dyn = model.apply(variables, image, method=FaceAutoencoder.encode_motion)
  image = model.apply(variables, canonical_volume, z_id, z_pose, z_dyn,
                      method=FaceAutoencoder.decode)

Print the parameter counts of a config variant with
`python -m vasa_jax.models.autoencoder [512|256|tiny]`.
"""

from __future__ import annotations

import sys
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vasa_jax.models import encoders
from vasa_jax.models import generators
from vasa_jax.models import layers
from vasa_jax.models import warping


class FaceAutoencoder(nn.Module):
  """Encoders, warping generators, G3D and G2D of the face latent space; build with `from_config`.

  Images are [B, S, S, 3] in [-1, 1]; volumes [B, D, S/8, S/8, C] (paper: [B, 16, 64, 64, 96]).
  """
  appearance_encoder: encoders.AppearanceEncoder  # image -> posed appearance volume
  identity_encoder: encoders.IdentityEncoder  # image -> z_id
  motion_encoder: encoders.MotionEncoder  # image -> (z_pose, z_dyn)
  source_to_canonical: generators.WarpingGenerator  # flow removing the source's expression
  canonical_to_driver: generators.WarpingGenerator  # flow adding the driver's expression
  canonical_network: generators.CanonicalUNet  # G3D
  decoder: generators.Decoder2D  # G2D
  warp_padding: str = "border"  # padding of the trilinear warps: "border" or "zeros"
  # G2D's residual blocks normalise adaptively on z_dyn (besides the warp, a direct path from the
  # dynamics code to the rendered mouth and eyes); MegaPortraits' G2D sees only the volume.
  decoder_sees_dyn: bool = False

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict) -> "FaceAutoencoder":
    """The autoencoder described by `config.model` (see configs/latent.py)."""
    return cls(**submodules_from_config(model_config), warp_padding=model_config.warp_padding,
               decoder_sees_dyn=model_config.decoder.sees_dyn)

  def encode_motion(self, image: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, S, S, 3] -> (z_pose [B, 7], z_dyn [B, dyn_dim]), float32."""
    return self.motion_encoder(image)

  def encode_identity(self, image: jax.Array) -> jax.Array:
    """[B, S, S, 3] -> z_id [B, identity_dim], float32."""
    return self.identity_encoder(image)

  def encode_appearance(
      self, image: jax.Array,
      motion: Optional[tuple[jax.Array, jax.Array]] = None) -> tuple[jax.Array, jax.Array]:
    """[B, S, S, 3] -> (canonical volume V_app [B, D, S/8, S/8, C], z_id [B, identity_dim]).

    The posed appearance volume is warped to canonical space with the image's own motion (the
    inverse rigid transform plus the source->canonical flow), then refined by G3D. `motion` is
    the image's (z_pose, z_dyn) when already computed; by default it is encoded here.
    """
    z_pose, z_dyn = self.encode_motion(image) if motion is None else motion
    posed_volume = self.appearance_encoder(image)  # [B, D, h, w, C]
    z_id = self.identity_encoder(image)  # [B, identity_dim]
    flow = self.source_to_canonical(z_dyn, z_id)  # [B, D, h, w, 3]
    grid = warping.posed_to_canonical_grid(z_pose, shape=posed_volume.shape[1:4], flow=flow)
    canonical_volume = warping.trilinear_sample(posed_volume, grid, self.warp_padding)
    return self.canonical_network(canonical_volume.astype(posed_volume.dtype)), z_id

  def decode(self, canonical_volume: jax.Array, z_id: jax.Array, z_pose: jax.Array,
             z_dyn: jax.Array) -> jax.Array:
    """D(V_app, z_id, z_pose, z_dyn) -> image [B, S, S, 3] in [-1, 1] (float32).

    The canonical volume is warped to the driven pose and expression (the canonical->driver flow
    plus the rigid transform of z_pose) and rendered by G2D.
    """
    flow = self.canonical_to_driver(z_dyn, z_id)  # [B, D, h, w, 3]
    grid = warping.canonical_to_posed_grid(z_pose, shape=canonical_volume.shape[1:4], flow=flow)
    posed_volume = warping.trilinear_sample(canonical_volume, grid, self.warp_padding)
    return self.decoder(posed_volume.astype(canonical_volume.dtype),
                        z_dyn if self.decoder_sees_dyn else None)

  def __call__(self, source_image: jax.Array, driver_image: jax.Array) -> dict[str, jax.Array]:
    """Reenacts the source's appearance with the driver's motion (one pass through every part).

    Returns a dict of
      "canonical_volume": [B, D, h, w, C] the source's V_app;
      "z_id": [B, identity_dim] the source's identity;
      "source_pose", "source_dyn", "driver_pose", "driver_dyn": the motion codes;
      "reenacted_image": [B, S, S, 3] D(V_app, z_id, driver_pose, driver_dyn), in [-1, 1].
    """
    batch = source_image.shape[0]
    z_pose, z_dyn = self.encode_motion(
        jnp.concatenate([source_image, driver_image], axis=0))  # one pass over both: [2B, ..]
    source_motion = (z_pose[:batch], z_dyn[:batch])
    driver_motion = (z_pose[batch:], z_dyn[batch:])
    canonical_volume, z_id = self.encode_appearance(source_image, motion=source_motion)
    return {
        "canonical_volume": canonical_volume,
        "z_id": z_id,
        "source_pose": source_motion[0],
        "source_dyn": source_motion[1],
        "driver_pose": driver_motion[0],
        "driver_dyn": driver_motion[1],
        "reenacted_image": self.decode(canonical_volume, z_id, *driver_motion),
    }


def volume_shape(model_config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(D, H, W) of the appearance volume: the image size halved once per later appearance stage."""
  halvings = len(model_config.appearance.stage_channels) - 1
  if model_config.image_size % 2**halvings:
    raise ValueError(f"image_size {model_config.image_size} is not divisible by 2^{halvings}")
  size = model_config.image_size >> halvings
  return model_config.volume_depth, size, size


def submodules_from_config(model_config: ml_collections.ConfigDict) -> dict[str, nn.Module]:
  """The FaceAutoencoder's parts, by field name, from `config.model`."""
  shared = dict(num_groups=model_config.num_groups, remat=model_config.remat,
                dtype=layers.compute_dtype(model_config.dtype), param_dtype=jnp.float32)
  appearance, identity, motion = (model_config.appearance, model_config.identity,
                                  model_config.motion)
  warp, canonical, decoder = model_config.warping, model_config.canonical, model_config.decoder
  halvings = len(appearance.stage_channels) - 1
  if len(decoder.upsample_channels) != halvings:
    raise ValueError(f"the decoder upsamples {len(decoder.upsample_channels)} times but the "
                     f"appearance encoder halves the image {halvings} times")

  def warping_generator():
    return generators.WarpingGenerator(
        volume_shape(model_config), warp.seed_channels, tuple(warp.level_channels),
        warp.blocks_per_level, warp.max_flow, **shared)

  return dict(
      appearance_encoder=encoders.AppearanceEncoder(
          tuple(appearance.stage_channels), appearance.blocks_per_stage,
          model_config.volume_channels, model_config.volume_depth, appearance.volume_blocks,
          **shared),
      identity_encoder=encoders.IdentityEncoder(
          model_config.identity_dim, tuple(identity.stage_channels), identity.blocks_per_stage,
          identity.input_size, **shared),
      motion_encoder=encoders.MotionEncoder(
          model_config.dyn_dim, tuple(motion.stage_channels), motion.blocks_per_stage,
          motion.input_size, motion.max_rotation, motion.max_translation, motion.max_log_scale,
          motion.pooling, **shared),
      source_to_canonical=warping_generator(),
      canonical_to_driver=warping_generator(),
      canonical_network=generators.CanonicalUNet(
          tuple(canonical.level_channels), canonical.blocks_per_level, **shared),
      decoder=generators.Decoder2D(
          decoder.channels, decoder.residual_blocks, tuple(decoder.upsample_channels),
          **shared),
  )


def abstract_variables(model_config: ml_collections.ConfigDict, batch_size: int = 1):
  """Boxed (logically partitioned) abstract variables of the model, without allocating them."""
  model = FaceAutoencoder.from_config(model_config)
  image = jax.ShapeDtypeStruct(
      (batch_size, model_config.image_size, model_config.image_size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), image, image)


def parameter_counts(params) -> dict[str, int]:
  """Number of parameters of each part of the model, and "total", from (abstract) `params`."""
  counts = {name: sum(leaf.size for leaf in jax.tree.leaves(tree))
            for name, tree in nn.meta.unbox(params).items()}
  counts["total"] = sum(counts.values())
  return counts


def main(argv: list[str]) -> None:
  """`python -m vasa_jax.models.autoencoder configs/latent.py:paper configs/latent.py:tiny ...`
  prints the parameter counts of each config's model."""
  from vasa_jax.training import config_files  # pylint: disable=import-outside-toplevel
  for spec in argv[1:] or [config_files.default_path("configs/latent.py") + ":paper"]:
    counts = parameter_counts(abstract_variables(config_files.load(spec).model)["params"])
    print(f"{spec}: " + ", ".join(f"{name} {count / 1e6:.2f}M"
                                  for name, count in counts.items()))


if __name__ == "__main__":
  main(sys.argv)
