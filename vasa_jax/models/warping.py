"""MegaPortraits-style 3D warping: linear resampling, head-pose rotations and warp grids.

Pure JAX functions (no Flax modules), usable under `jit` and `vmap`; the coordinate maths is
float32 (or float64 for float64 inputs) whatever the dtype of the sampled features. The samplers
gather the interpolation corners by flat index within each example (mapped over the batch, so a
batch sharded over devices is warped without any cross-device traffic) and have a custom VJP
that gathers them again in the backward pass, so reverse-mode differentiation (in the features
and the grid) keeps no per-corner copies; forward-mode (`jax.jvp`, `jax.jacfwd`) is not
supported through them.

Conventions:
  * A volume is `[B, D, H, W, C]`, an image `[B, H, W, C]`.
  * Normalised coordinates are `(x, y, z)` in [-1, 1]: x along W, y along H, z along D. The
    centre of voxel `i` of an axis of `N` voxels is at `-1 + (2i + 1) / N`, so the coordinate
    range covers the outer faces of the edge voxels (PyTorch's `grid_sample` with
    `align_corners=False`). The continuous voxel index of a coordinate `u` is
    `((u + 1) * N - 1) / 2`.
  * A sampling grid is `[B, D', H', W', 3]` of `(x, y, z)` (2D: `[B, H', W', 2]` of `(x, y)`):
    output voxel `[b, k, i, j]` takes the input's value at `grid[b, k, i, j]`.
  * Padding: "border" clamps coordinates to the edge voxel centres (the volume extends by
    replicating its edge voxels); "zeros" gives out-of-range interpolation corners the value 0,
    so values fade to 0 over the outer half voxel and are 0 one voxel beyond the centre of the
    edge voxel.
  * The axes are those of the camera frame of the data annotations (`vasa_jax.data.synthtalk.render`):
    x to the image's right, y down, z away from the camera. Rotations act on normalised
    coordinates, i.e. the volume is treated as the cube [-1, 1]^3 whatever its voxel counts.
  * Head pose `z_pose` is `[B, 7]` = (yaw, pitch, roll in radians, tx, ty, tz, log_scale) with
    `R = Rz(roll) @ Ry(yaw) @ Rx(-pitch)` (yaw > 0 turns the face to the image's left, pitch > 0
    looks up, roll > 0 tilts the head clockwise in the image) and the rigid map from canonical to
    posed coordinates `x_posed = exp(log_scale) * R @ x_canonical + t`; t is in normalised units.

Warps (keypoint-free, as in MegaPortraits): `posed_to_canonical_grid` removes the source head
motion (source volume -> canonical volume), `canonical_to_posed_grid` applies the driver's
(canonical volume -> driven volume); each takes an optional non-rigid offset field in normalised
units. Sample the volume at a grid with `warp_volume`.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

PADDING_MODES = ("border", "zeros")
POSE_SIZE = 7  # yaw, pitch, roll, tx, ty, tz, log_scale

# Coordinate matmuls at full float32 precision (no TF32 on GPUs: it would move samples by ~1e-3).
_HIGHEST = jax.lax.Precision.HIGHEST


def _interpolation_corner(index: jax.Array, corner: jax.Array, sizes: tuple[int, ...],
                          zero_padding: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One of the 2^N corners of N-linear interpolation at continuous voxel indices, one example.

  Args:
    index: [P, N] continuous voxel indices in coordinate order (x fastest in memory).
    corner: [N] 0 (lower) or 1 (upper) neighbour along each axis; may be traced.
    sizes: the N voxel counts in coordinate order.
    zero_padding: whether out-of-range corners get weight 0 (else `index` is already clamped to
      the edge voxel centres, so clamped corners only ever have weight 0).

  Returns:
    rows: [P] rows of the example's input flattened to [prod(sizes), C].
    weight: [P] interpolation weights.
    weight_grad: [P, N] derivatives of `weight` with respect to `index`.
  """
  num_axes = index.shape[-1]
  lower = jnp.floor(index)
  upper = corner.astype(bool)
  factors = jnp.where(upper, index - lower, 1 - (index - lower))  # [P, N]
  weight = jnp.prod(factors, axis=-1)
  # d weight / d index_a = (+1 upper, -1 lower) * the product of the other axes' factors.
  other_factors = jnp.stack(
      [math.prod(factors[..., other] for other in range(num_axes) if other != axis)
       for axis in range(num_axes)], axis=-1)
  weight_grad = jnp.where(upper, 1, -1).astype(index.dtype) * other_factors
  corner_index = lower.astype(jnp.int32) + corner  # [P, N]
  sizes_int = jnp.asarray(sizes, jnp.int32)
  if zero_padding:
    in_range = jnp.all((corner_index >= 0) & (corner_index < sizes_int), axis=-1)  # [P]
    weight = jnp.where(in_range, weight, 0)
    weight_grad = jnp.where(in_range[..., None], weight_grad, 0)
  strides = jnp.asarray([math.prod(sizes[:axis]) for axis in range(num_axes)], jnp.int32)
  rows = jnp.sum(jnp.clip(corner_index, 0, sizes_int - 1) * strides, axis=-1)
  return rows, weight, weight_grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _interpolate(flat_array: jax.Array, index: jax.Array, sizes: tuple[int, ...],
                 zero_padding: bool) -> jax.Array:
  """N-linear interpolation of one example's `flat_array` [prod(sizes), C] at `index` [P, N]
  -> [P, C] (`_linear_sample` maps it over the batch).

  The forward pass sums the 2^N gathered corners (one fusion). The backward pass loops over the
  corners and gathers each again instead of keeping it from the forward pass: the residuals are
  only the inputs (autodiff would keep 2^N gathered copies of the output), and one corner's
  buffers are alive at a time, the input gradient accumulating by in-place scatter-adds.
  """
  out_dtype = jnp.promote_types(flat_array.dtype, index.dtype)
  result = jnp.zeros(index.shape[:1] + flat_array.shape[-1:], out_dtype)  # [P, C]
  for corner in itertools.product((0, 1), repeat=len(sizes)):
    rows, weight, _ = _interpolation_corner(index, jnp.asarray(corner, jnp.int32), sizes,
                                            zero_padding)
    result = result + weight[..., None].astype(out_dtype) * flat_array[rows]
  return result


def _interpolate_fwd(flat_array, index, sizes, zero_padding):
  return _interpolate(flat_array, index, sizes, zero_padding), (flat_array, index)


def _interpolate_bwd(sizes, zero_padding, residuals, result_grad):
  flat_array, index = residuals
  axis_bits = jnp.arange(len(sizes), dtype=jnp.int32)

  def add_corner(corner_number, grads):
    array_grad, index_grad = grads  # [prod(sizes), C], [P, N]
    corner = (corner_number >> axis_bits) & 1  # [N] the bits of the corner number
    rows, weight, weight_grad = _interpolation_corner(index, corner, sizes, zero_padding)
    array_grad = array_grad.at[rows].add(weight[..., None].astype(result_grad.dtype)
                                         * result_grad)
    value_grad = jnp.sum(flat_array[rows] * result_grad, axis=-1)  # [P]
    return array_grad, index_grad + value_grad[..., None].astype(index.dtype) * weight_grad

  array_grad, index_grad = jax.lax.fori_loop(
      0, 2 ** len(sizes), add_corner,
      (jnp.zeros(flat_array.shape, result_grad.dtype), jnp.zeros_like(index)))
  return array_grad.astype(flat_array.dtype), index_grad


_interpolate.defvjp(_interpolate_fwd, _interpolate_bwd)


def _linear_sample(array: jax.Array, grid: jax.Array, padding: str) -> jax.Array:
  """N-linear interpolation of `array` [B, *S, C] at `grid` [B, *S', N], N = len(S).

  The last axis of `grid` lists coordinates in reverse spatial order: (x, y, z) for S = (D, H, W).
  """
  if padding not in PADDING_MODES:
    raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
  batch, *spatial, channels = array.shape
  if grid.shape[0] != batch:
    raise ValueError(f"grid batch {grid.shape[0]} != input batch {batch}")
  coord_dtype = jnp.promote_types(grid.dtype, jnp.float32)
  sizes = tuple(reversed(spatial))  # voxel counts in coordinate order (x, y, z)
  sizes_float = jnp.asarray(sizes, coord_dtype)
  coords = grid.reshape(batch, -1, len(sizes)).astype(coord_dtype)  # [B, P, N]
  index = ((coords + 1) * sizes_float - 1) / 2  # [B, P, N] continuous voxel indices
  if padding == "border":
    index = jnp.clip(index, 0, sizes_float - 1)
  else:
    # Beyond one voxel outside, every corner is out of range; clipping there changes nothing
    # but keeps the integer conversion safe for far-away coordinates.
    index = jnp.clip(index, -1, sizes_float)
  # Each example gathers from its own volume: mapped over the batch, the gathers and the
  # backward pass's scatter-adds keep the batch as a batch dimension, so with the batch sharded
  # over devices every device reads only its own examples (no collective on volumes).
  result = jax.vmap(lambda example, example_index: _interpolate(  # [B, P, C]
      example, example_index, sizes, padding == "zeros"))(array.reshape(batch, -1, channels), index)
  return result.reshape(grid.shape[:-1] + (channels,))


def trilinear_sample(volume: jax.Array, grid: jax.Array, padding: str = "border") -> jax.Array:
  """Samples `volume` [B, D, H, W, C] at `grid` [B, D', H', W', 3] -> [B, D', H', W', C].

  Differentiable in both the volume and the grid (the grid gradient is that of the piecewise
  trilinear interpolant, 0 where "border" clamps a coordinate).
  """
  if volume.ndim != 5 or grid.ndim != 5 or grid.shape[-1] != 3:
    raise ValueError(f"expected volume [B, D, H, W, C] and grid [B, D', H', W', 3], got "
                     f"{volume.shape} and {grid.shape}")
  return _linear_sample(volume, grid, padding)


def bilinear_sample(image: jax.Array, grid: jax.Array, padding: str = "border") -> jax.Array:
  """Samples `image` [B, H, W, C] at `grid` [B, H', W', 2] of (x, y) -> [B, H', W', C]."""
  if image.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2:
    raise ValueError(f"expected image [B, H, W, C] and grid [B, H', W', 2], got "
                     f"{image.shape} and {grid.shape}")
  return _linear_sample(image, grid, padding)


def warp_volume(volume: jax.Array, grid: jax.Array, padding: str = "border") -> jax.Array:
  """Warps `volume` [B, D, H, W, C] with a grid of the `*_grid` functions: `trilinear_sample`."""
  return trilinear_sample(volume, grid, padding)


def identity_grid(depth: int, height: int, width: int, dtype=jnp.float32) -> jax.Array:
  """Normalised (x, y, z) coordinates of the voxel centres of a [D, H, W] volume -> [D, H, W, 3]."""

  def centres(size):
    return (2 * jnp.arange(size, dtype=dtype) + 1) / size - 1

  z, y, x = jnp.meshgrid(centres(depth), centres(height), centres(width), indexing="ij")
  return jnp.stack([x, y, z], axis=-1)


def _axis_rotation(angle: jax.Array, axis: int) -> jax.Array:
  """Right-handed rotations [..., 3, 3] by `angle` (radians) about axis 0 (x), 1 (y) or 2 (z)."""
  first, second = (axis + 1) % 3, (axis + 2) % 3  # the rotated plane, in cyclic order
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  matrix = jnp.broadcast_to(jnp.eye(3, dtype=angle.dtype), angle.shape + (3, 3))
  matrix = matrix.at[..., first, first].set(cos).at[..., second, second].set(cos)
  return matrix.at[..., first, second].set(-sin).at[..., second, first].set(sin)


def rotation_matrix(yaw, pitch, roll) -> jax.Array:
  """Head-to-camera rotations [..., 3, 3] = Rz(roll) @ Ry(yaw) @ Rx(-pitch), angles in radians.

  The angles are arrays of one shape (or broadcastable), e.g. [B] -> [B, 3, 3].
  """
  yaw, pitch, roll = jnp.broadcast_arrays(
      *(jnp.asarray(angle, jnp.promote_types(jnp.result_type(angle), jnp.float32))
        for angle in (yaw, pitch, roll)))
  return jnp.matmul(
      jnp.matmul(_axis_rotation(roll, 2), _axis_rotation(yaw, 1), precision=_HIGHEST),
      _axis_rotation(-pitch, 0), precision=_HIGHEST)


def pose_to_rigid(z_pose: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Splits `z_pose` [..., 7] into rotation [..., 3, 3], translation [..., 3] and scale [...]."""
  if z_pose.shape[-1] != POSE_SIZE:
    raise ValueError(f"z_pose must end with {POSE_SIZE} values, got shape {z_pose.shape}")
  z_pose = z_pose.astype(jnp.promote_types(z_pose.dtype, jnp.float32))
  rotation = rotation_matrix(z_pose[..., 0], z_pose[..., 1], z_pose[..., 2])
  return rotation, z_pose[..., 3:6], jnp.exp(z_pose[..., 6])


def _voxel_centres(z_pose: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Normalised voxel centres of a volume of `shape` (D, H, W), per pose -> [B, D, H, W, 3]."""
  if z_pose.ndim != 2:
    raise ValueError(f"z_pose must be [B, {POSE_SIZE}], got shape {z_pose.shape}")
  centres = identity_grid(*shape, dtype=jnp.promote_types(z_pose.dtype, jnp.float32))
  return jnp.broadcast_to(centres, (z_pose.shape[0],) + centres.shape)


def _add_flow(points: jax.Array, flow: Optional[jax.Array]) -> jax.Array:
  """`points` [B, D, H, W, 3] plus the offsets `flow` of the same shape, if given."""
  if flow is None:
    return points
  if flow.shape != points.shape:
    raise ValueError(f"flow must have shape {points.shape}, got {flow.shape}")
  return points + flow


def posed_to_canonical_grid(z_pose: jax.Array, shape: Sequence[int],
                            flow: Optional[jax.Array] = None) -> jax.Array:
  """Grid [B, D, H, W, 3] that warps a posed (source) volume to the canonical volume.

  For each canonical voxel centre `x_c`, the posed coordinates to sample:
  `x_p = scale * R @ (x_c + flow(x_c)) + t`, which removes the source head motion.

  Args:
    z_pose: [B, 7] source head pose (see the module docstring).
    shape: (D, H, W) of the canonical volume.
    flow: optional [B, D, H, W, 3] non-rigid offsets (x, y, z) in normalised canonical units.
  """
  rotation, translation, scale = pose_to_rigid(z_pose)  # [B, 3, 3], [B, 3], [B]
  canonical = _add_flow(_voxel_centres(z_pose, shape), flow)  # [B, D, H, W, 3]
  rotated = jnp.einsum("bij,bdhwj->bdhwi", rotation, canonical, precision=_HIGHEST)
  return scale[:, None, None, None, None] * rotated + translation[:, None, None, None, :]


def canonical_to_posed_grid(z_pose: jax.Array, shape: Sequence[int],
                            flow: Optional[jax.Array] = None) -> jax.Array:
  """Grid [B, D, H, W, 3] that warps the canonical volume to a posed (driven) volume.

  For each posed voxel centre `x_p`, the canonical coordinates to sample:
  `x_c = R^T @ (x_p - t) / scale + flow(x_p)`, which applies the driver's head motion.

  Args:
    z_pose: [B, 7] driver head pose (see the module docstring).
    shape: (D, H, W) of the driven volume.
    flow: optional [B, D, H, W, 3] non-rigid offsets (x, y, z) in normalised canonical units.
  """
  rotation, translation, scale = pose_to_rigid(z_pose)  # [B, 3, 3], [B, 3], [B]
  posed = _voxel_centres(z_pose, shape)  # [B, D, H, W, 3]
  centred = posed - translation[:, None, None, None, :]
  unrotated = jnp.einsum("bji,bdhwj->bdhwi", rotation, centred, precision=_HIGHEST)
  return _add_flow(unrotated / scale[:, None, None, None, None], flow)
