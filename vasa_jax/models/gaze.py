"""The gaze network of the stage-1 gaze loss: MPIIGaze's LeNet (Zhang et al., CVPR 2015).

MegaPortraits trains with a gaze loss (weight 5) computed by a pretrained gaze-estimation network
on the generated and the driver image; neither it nor VASA-1 names the network. This project
uses the small, standard appearance-based gaze estimator of MPIIGaze ("Appearance-Based Gaze
Estimation in the Wild", arXiv 1504.02863), laid out as hysts/pytorch_mpiigaze's
`models/mpiigaze/lenet.py`, so that its trained state dicts convert one to one
(`python -m data_prep.convert_weights --kind=gaze`):

  conv1   5x5, 1 -> 20, no padding, then a 2x2 max pool     [B, 16, 28, 20]
  conv2   5x5, 20 -> 50, no padding, then a 2x2 max pool    [B, 6, 12, 50]
  fc1     3600 -> 500 on the flattened map (PyTorch's C, H, W order), ReLU
  fc2     [fc1, head pose (pitch, yaw)] 502 -> 2: gaze (pitch, yaw) in radians

Its input is a grey 36 x 60 eye patch in [0, 1] (MPIIGaze's normalised eye images) and the
head pose. `eye_patches` cuts the patches out of face crops, bilinearly, from boxes around the
tracker's eye landmarks (`vasa_jax.data.input_pipeline.eye_boxes`), so the gradient reaches the
rendered pixels. MPIIGaze equalises each patch's histogram first; that is not differentiable and
is left out here.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# MPIIGaze's eye patch (rows, columns).
PATCH_HEIGHT = 36
PATCH_WIDTH = 60
# ITU-R BT.601 luma weights of R, G, B (OpenCV's grey conversion, which MPIIGaze's data went
# through).
_LUMA = (0.299, 0.587, 0.114)


class GazeLeNet(nn.Module):
  """MPIIGaze's LeNet. Call: (eyes [B, 36, 60, 1] grey in [0, 1], head pose [B, 2] (pitch, yaw)
  radians) -> (gaze [B, 2] (pitch, yaw) radians, [conv1 pooled, conv2 pooled, fc1] features)."""
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  def example_inputs(self) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """Abstract inputs of one example (`pretrained.abstract_variables` initialises on them)."""
    return (jax.ShapeDtypeStruct((1, PATCH_HEIGHT, PATCH_WIDTH, 1), jnp.float32),
            jax.ShapeDtypeStruct((1, 2), jnp.float32))

  @nn.compact
  def __call__(self, eyes: jax.Array, head_pose: jax.Array
               ) -> tuple[jax.Array, list[jax.Array]]:
    if eyes.shape[1:] != (PATCH_HEIGHT, PATCH_WIDTH, 1):
      raise ValueError(f"GazeLeNet reads [B, {PATCH_HEIGHT}, {PATCH_WIDTH}, 1] eye patches, "
                       f"got {eyes.shape}")
    dense_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None))
    conv_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                             (None, None, None, None))
    kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    pool1 = nn.max_pool(nn.Conv(20, (5, 5), padding="VALID", kernel_init=conv_init,
                                name="conv1", **kwargs)(eyes.astype(self.dtype)),
                        (2, 2), strides=(2, 2))  # [B, 16, 28, 20]
    pool2 = nn.max_pool(nn.Conv(50, (5, 5), padding="VALID", kernel_init=conv_init,
                                name="conv2", **kwargs)(pool1),
                        (2, 2), strides=(2, 2))  # [B, 6, 12, 50]
    flat = jnp.transpose(pool2, (0, 3, 1, 2)).reshape(pool2.shape[0], -1)  # [B, 3600] C, H, W
    hidden = nn.relu(nn.Dense(500, kernel_init=dense_init, name="fc1", **kwargs)(flat))
    joined = jnp.concatenate([hidden, head_pose.astype(self.dtype)], axis=-1)  # [B, 502]
    gaze = nn.Dense(2, kernel_init=dense_init, name="fc2", **kwargs)(joined)  # [B, 2]
    return gaze.astype(jnp.float32), [pool1, pool2, hidden]


def eye_patches(images: jax.Array, boxes: jax.Array) -> jax.Array:
  """Grey eye patches for `GazeLeNet`, sampled bilinearly (differentiable in the images).

  Args:
    images: [B, S, S, 3] in [-1, 1].
    boxes: [B, E, 4] per image E boxes (y0, x0, y1, x1) in pixel units of the image (pixel i
      covers [i, i + 1)); each is resampled to 36 x 60 whatever its size.

  Returns:
    float32 [B * E, 36, 60, 1] in [0, 1], the E patches of image 0 first.
  """
  grey = jnp.tensordot((images.astype(jnp.float32) + 1.0) / 2.0,
                       jnp.asarray(_LUMA, jnp.float32), axes=1)  # [B, S, S]
  fractions_y = (jnp.arange(PATCH_HEIGHT, dtype=jnp.float32) + 0.5) / PATCH_HEIGHT
  fractions_x = (jnp.arange(PATCH_WIDTH, dtype=jnp.float32) + 0.5) / PATCH_WIDTH

  def one_patch(image, box):  # [S, S], [4] -> [36, 60]
    y0, x0, y1, x1 = box[0], box[1], box[2], box[3]
    rows = y0 + (y1 - y0) * fractions_y - 0.5  # sample positions in pixel-centre coordinates
    columns = x0 + (x1 - x0) * fractions_x - 0.5
    grid_y, grid_x = jnp.meshgrid(rows, columns, indexing="ij")
    return jax.scipy.ndimage.map_coordinates(image, [grid_y, grid_x], order=1, mode="nearest")

  patches = jax.vmap(lambda image, image_boxes: jax.vmap(
      lambda box: one_patch(image, box))(image_boxes))(grey, boxes.astype(jnp.float32))
  return patches.reshape(-1, PATCH_HEIGHT, PATCH_WIDTH, 1)  # [B * E, 36, 60, 1]
