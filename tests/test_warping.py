"""3D warping: samplers against scipy, gradients, rotation convention, pose round trips, tracing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from vasa_jax.data.synthtalk import render as synthtalk_render
from vasa_jax.models import warping

# scipy's names for the padding modes: "nearest" replicates edge voxels (= clamping coordinates
# to the edge centres); "grid-constant" interpolates towards cval outside the input, which is
# exactly the zero padding of the 8-corner formula (its "constant" mode does not interpolate
# beyond the edge centres, so it differs on the outer half voxel).
SCIPY_MODES = {"border": "nearest", "zeros": "grid-constant"}


def to_index(coord, size):
  """Normalised coordinates (align_corners=False) -> continuous voxel indices."""
  return ((np.asarray(coord, np.float64) + 1) * size - 1) / 2


def scipy_sample(array, grid, padding):
  """Reference sampler: `array` [B, *S, C] at `grid` [B, *S', N] (coordinates in (x, y, z) order)."""
  spatial = array.shape[1:-1]
  result = np.zeros(grid.shape[:-1] + array.shape[-1:])
  for b in range(array.shape[0]):
    # map_coordinates wants indices in array axis order: (z, y, x) for a volume.
    indices = np.stack([to_index(grid[b, ..., axis], spatial[-1 - axis])
                        for axis in reversed(range(len(spatial)))])
    for c in range(array.shape[-1]):
      result[b, ..., c] = scipy.ndimage.map_coordinates(
          array[b, ..., c].astype(np.float64), indices, order=1, mode=SCIPY_MODES[padding],
          cval=0.0)
  return result


def random_pose(rng, batch, max_degrees, max_translation=0.05, max_log_scale=0.1):
  angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, (batch, 3)))
  translation = rng.uniform(-max_translation, max_translation, (batch, 3))
  log_scale = rng.uniform(-max_log_scale, max_log_scale, (batch, 1))
  return jnp.asarray(np.concatenate([angles, translation, log_scale], axis=1), jnp.float32)


def test_identity_grid_is_voxel_centres():
  grid = np.asarray(warping.identity_grid(2, 3, 4))
  assert grid.shape == (2, 3, 4, 3)
  np.testing.assert_allclose(grid[0, 0, :, 0], [-0.75, -0.25, 0.25, 0.75])
  np.testing.assert_allclose(grid[0, :, 0, 1], [-2 / 3, 0, 2 / 3], atol=1e-7)
  np.testing.assert_allclose(grid[:, 0, 0, 2], [-0.5, 0.5])


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_trilinear_sample_matches_scipy(padding):
  rng = np.random.default_rng(0)
  volume = rng.normal(size=(2, 5, 6, 7, 3)).astype(np.float32)
  # Inside and up to ~1.5 voxels outside the volume on every axis.
  grid = rng.uniform(-1.4, 1.4, size=(2, 4, 5, 6, 3)).astype(np.float32)
  result = jax.jit(warping.trilinear_sample, static_argnums=2)(volume, grid, padding)
  assert result.shape == (2, 4, 5, 6, 3) and result.dtype == jnp.float32
  np.testing.assert_allclose(result, scipy_sample(volume, grid, padding), atol=1e-5)


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_bilinear_sample_matches_scipy(padding):
  rng = np.random.default_rng(1)
  image = rng.normal(size=(3, 6, 9, 2)).astype(np.float32)
  grid = rng.uniform(-1.4, 1.4, size=(3, 5, 4, 2)).astype(np.float32)
  result = jax.jit(warping.bilinear_sample, static_argnums=2)(image, grid, padding)
  assert result.shape == (3, 5, 4, 2)
  np.testing.assert_allclose(result, scipy_sample(image, grid, padding), atol=1e-5)


def test_padding_modes_far_outside():
  volume = jnp.arange(1, 1 + 2 * 3 * 4, dtype=jnp.float32).reshape(1, 2, 3, 4, 1)
  corner = jnp.full((1, 1, 1, 1, 3), -5.0)  # far beyond the (0, 0, 0) corner voxel
  assert warping.trilinear_sample(volume, corner, "border")[0, 0, 0, 0, 0] == 1.0
  assert warping.trilinear_sample(volume, corner, "zeros")[0, 0, 0, 0, 0] == 0.0
  with pytest.raises(ValueError, match="padding"):
    warping.trilinear_sample(volume, corner, "reflect")


def test_identity_pose_reproduces_volume():
  rng = np.random.default_rng(2)
  volume = jnp.asarray(rng.normal(size=(2, 4, 6, 8, 3)), jnp.float32)
  z_pose = jnp.zeros((2, warping.POSE_SIZE))
  zero_flow = jnp.zeros((2, 4, 6, 8, 3))

  @jax.jit
  def warp_both_ways(volume, z_pose, flow):
    return (warping.warp_volume(volume, warping.posed_to_canonical_grid(z_pose, (4, 6, 8), flow)),
            warping.warp_volume(volume, warping.canonical_to_posed_grid(z_pose, (4, 6, 8), flow)))

  for warped in warp_both_ways(volume, z_pose, zero_flow):
    # Only float32 rounding of the voxel centres (fractions of ~1e-7 voxel) remains.
    np.testing.assert_allclose(warped, volume, atol=1e-5)


def test_grids_follow_their_formulas():
  rng = np.random.default_rng(3)
  shape = (3, 4, 5)
  z_pose = random_pose(rng, 2, 30, max_translation=0.3, max_log_scale=0.3)
  flow = jnp.asarray(rng.normal(scale=0.1, size=(2,) + shape + (3,)), jnp.float32)
  rotation, translation, scale = (np.asarray(a, np.float64) for a in warping.pose_to_rigid(z_pose))
  centres = np.asarray(warping.identity_grid(*shape), np.float64)  # [D, H, W, 3]
  flow64 = np.asarray(flow, np.float64)
  expected_posed = (scale[:, None, None, None, None]
                    * np.einsum("bij,bdhwj->bdhwi", rotation, centres + flow64)
                    + translation[:, None, None, None])
  expected_canonical = (np.einsum("bji,bdhwj->bdhwi", rotation,
                                  centres - translation[:, None, None, None])
                        / scale[:, None, None, None, None] + flow64)
  np.testing.assert_allclose(warping.posed_to_canonical_grid(z_pose, shape, flow),
                             expected_posed, atol=1e-6)
  np.testing.assert_allclose(warping.canonical_to_posed_grid(z_pose, shape, flow),
                             expected_canonical, atol=1e-6)
  with pytest.raises(ValueError, match="flow"):
    warping.posed_to_canonical_grid(z_pose, shape, flow[:, :2])


def smooth_volume(rng, batch, shape, channels, modes=3, max_wavenumber=np.pi / 2):
  """Sums of `modes` sinusoids per channel with random wavevectors k, |k_a| <= max_wavenumber.

  Returns the volume [B, D, H, W, C] and wavevectors [B, C, M, 3] with amplitudes 1 / M.
  """
  wavevectors = rng.uniform(-max_wavenumber, max_wavenumber, (batch, channels, modes, 3))
  phases = rng.uniform(0, 2 * np.pi, (batch, channels, modes))
  centres = np.asarray(warping.identity_grid(*shape), np.float64)  # [D, H, W, 3]
  waves = np.sin(np.einsum("dhwa,bcma->bdhwcm", centres, wavevectors)
                 + phases[:, None, None, None])  # [B, D, H, W, C, M]
  return waves.mean(axis=-1).astype(np.float32), wavevectors


@pytest.mark.parametrize("max_degrees", [5, 20])
def test_warp_to_canonical_and_back_reproduces_interior(max_degrees):
  rng = np.random.default_rng(max_degrees)
  # Paper depth (16) with half the paper's in-plane size (32 x 32) to stay fast.
  shape, batch, channels = (16, 32, 32), 4, 3
  volume, wavevectors = smooth_volume(rng, batch, shape, channels)
  z_pose = random_pose(rng, batch, max_degrees)

  half_voxel = 1 / np.asarray(shape[::-1])  # (x, y, z)

  @jax.jit
  def warp_to_canonical_and_back(volume, z_pose):
    to_canonical = warping.posed_to_canonical_grid(z_pose, shape)  # [B, D, H, W, 3]
    canonical = warping.warp_volume(volume, to_canonical)
    to_posed = warping.canonical_to_posed_grid(z_pose, shape)
    # Interior: posed voxels whose round trip never meets the padding. A canonical voxel is valid
    # if its sample lies within the edge voxel centres of the posed volume; a posed voxel is
    # interior if every canonical corner with non-zero weight is valid, i.e. if sampling the
    # valid mask with zero padding gives exactly 1.
    valid = jnp.all(jnp.abs(to_canonical) <= 1 - half_voxel, axis=-1, keepdims=True)
    interior = warping.trilinear_sample(valid.astype(jnp.float32), to_posed, "zeros")
    return canonical, warping.warp_volume(canonical, to_posed), interior[..., 0] > 1 - 1e-6

  canonical, round_trip, interior = warp_to_canonical_and_back(volume, z_pose)
  assert interior.mean() > 0.5
  error = np.abs(round_trip - volume)[interior].max()

  # Tolerance: the trilinear interpolation error bound, sum_a h_a^2 / 8 * max |d_a^2 f|, of both
  # warps (the second interpolates a convex combination, so it carries the first one's error
  # unchanged). A mode sin(k . x) of the posed volume is sin(k' . x_c + ...) in the canonical
  # volume with k' = scale * R^T k. With h = (2/32, 2/32, 2/16) and |k_a| <= pi / 2 the bound is
  # 6e-3..8e-3 against amplitude 1; the measured errors, 5.5e-3 (5 degrees) and 6.6e-3 (20
  # degrees), are 75-90% of it: it is what trilinear interpolation really costs, and it falls as
  # h^2 (the depth spacing dominates). 1e-5 covers float32 rounding.
  spacing = 2 / np.asarray(shape[::-1], np.float64)  # (x, y, z)
  rotation, _, scale = (np.asarray(a, np.float64) for a in warping.pose_to_rigid(z_pose))
  canonical_wavevectors = scale[:, None, None, None] * np.einsum(
      "bji,bcmj->bcmi", rotation, wavevectors)
  curvature = (wavevectors ** 2 + canonical_wavevectors ** 2).mean(axis=2)  # [B, C, 3], amp 1/M
  bound = (curvature @ spacing ** 2).max() / 8 + 1e-5
  assert error <= bound, (error, bound)
  # The warp is not trivial: the canonical volume differs from the posed one.
  assert np.abs(np.asarray(canonical) - volume).max() > 0.05


def test_rotation_matrix_matches_synthtalk_convention():
  rng = np.random.default_rng(4)
  yaw, pitch, roll = rng.uniform(-90, 90, (3, 16))
  expected = synthtalk_render.rotation_matrix(yaw, pitch, roll)  # degrees
  rotation = np.asarray(warping.rotation_matrix(*np.deg2rad([yaw, pitch, roll])), np.float64)
  assert rotation.shape == (16, 3, 3)
  np.testing.assert_allclose(rotation, expected, atol=1e-6)
  np.testing.assert_allclose(rotation @ np.swapaxes(rotation, -1, -2),
                             np.broadcast_to(np.eye(3), (16, 3, 3)), atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-6)
  # Signs in the camera frame (x right, y down, z away): yaw > 0 turns the face (-z) towards
  # the image's left (-x); pitch > 0 turns it up (-y).
  face = np.array([0.0, 0.0, -1.0])
  assert (np.asarray(warping.rotation_matrix(0.3, 0.0, 0.0)) @ face)[0] < 0
  assert (np.asarray(warping.rotation_matrix(0.0, 0.3, 0.0)) @ face)[1] < 0


def directional_difference(function, point, direction, step):
  return (function(point + step * direction) - function(point - step * direction)) / (2 * step)


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_gradients_match_finite_differences(padding):
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    volume = jnp.asarray(rng.normal(size=(2, 3, 4, 5, 2)))
    sizes = np.array([5, 4, 3])  # (x, y, z) voxel counts
    # Grid points at fractional voxel positions in [0.2, 0.8], away from the voxel boundaries
    # where the interpolant has kinks, including points in the outer half voxel (indices -0.8
    # and size - 0.2) where the padding mode matters.
    index = rng.integers(-1, sizes, size=(2, 2, 3, 3, 3)) + rng.uniform(0.2, 0.8, (2, 2, 3, 3, 3))
    grid = jnp.asarray((2 * index + 1) / sizes - 1)
    cotangent = jnp.asarray(rng.normal(size=(2, 2, 3, 3, 2)))

    @jax.jit
    def loss(volume, grid):
      return jnp.sum(cotangent * warping.trilinear_sample(volume, grid, padding))

    volume_grad, grid_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(volume, grid)
    assert volume_grad.dtype == jnp.float64
    assert np.all(np.isfinite(volume_grad)) and np.all(np.isfinite(grid_grad))
    for _ in range(3):
      volume_direction = jnp.asarray(rng.normal(size=volume.shape))
      grid_direction = jnp.asarray(rng.normal(size=grid.shape))
      np.testing.assert_allclose(
          jnp.vdot(volume_grad, volume_direction),
          directional_difference(lambda v: loss(v, grid), volume, volume_direction, 1e-4),
          rtol=1e-8)
      np.testing.assert_allclose(
          jnp.vdot(grid_grad, grid_direction),
          directional_difference(lambda g: loss(volume, g), grid, grid_direction, 1e-6),
          rtol=1e-6)
  assert jnp.zeros(1).dtype == jnp.float32  # the x64 setting is restored


def test_gradients_are_finite_everywhere_in_float32():
  rng = np.random.default_rng(6)
  volume = jnp.asarray(rng.normal(size=(1, 3, 4, 5, 2)), jnp.float32)
  # Voxel centres and boundaries exactly, and far outside.
  grid = jnp.asarray(np.stack(np.meshgrid(*[np.linspace(-3, 3, 13)] * 3, indexing="ij"), -1)[None],
                     jnp.float32)
  for padding in warping.PADDING_MODES:
    grads = jax.jit(jax.grad(lambda v, g: jnp.sum(warping.trilinear_sample(v, g, padding) ** 2),
                             argnums=(0, 1)))(volume, grid)
    assert all(np.all(np.isfinite(grad)) for grad in grads)


def test_jit_and_vmap():
  rng = np.random.default_rng(7)
  shape = (4, 6, 8)
  volumes = jnp.asarray(rng.normal(size=(3, 2) + shape + (5,)), jnp.float32)  # [T, B, ...]
  poses = jnp.stack([random_pose(rng, 2, 20) for _ in range(3)])  # [T, B, 7]
  flows = jnp.asarray(rng.normal(scale=0.05, size=(3, 2) + shape + (3,)), jnp.float32)

  def to_canonical(volume, z_pose, flow):
    return warping.warp_volume(volume, warping.posed_to_canonical_grid(z_pose, shape, flow))

  def loss(volume, z_pose, flow):
    return jnp.sum(jnp.sin(to_canonical(volume, z_pose, flow)))

  loss_grad = jax.grad(loss, argnums=(0, 1, 2))
  batched = jax.jit(jax.vmap(to_canonical))(volumes, poses, flows)
  batched_grads = jax.jit(jax.vmap(loss_grad))(volumes, poses, flows)
  assert batched.shape == (3, 2) + shape + (5,)
  single, single_grads = jax.jit(to_canonical), jax.jit(loss_grad)
  for t in range(3):
    np.testing.assert_allclose(batched[t], single(volumes[t], poses[t], flows[t]), atol=1e-5)
    for batched_grad, grad in zip(batched_grads, single_grads(volumes[t], poses[t], flows[t])):
      np.testing.assert_allclose(batched_grad[t], grad, rtol=1e-4, atol=1e-4)


def test_paper_size_shapes():
  volume = jax.ShapeDtypeStruct((8, 16, 64, 64, 96), jnp.float32)
  z_pose = jax.ShapeDtypeStruct((8, warping.POSE_SIZE), jnp.float32)
  flow = jax.ShapeDtypeStruct((8, 16, 64, 64, 3), jnp.float32)

  def to_canonical_and_back(volume, z_pose, flow):
    canonical = warping.warp_volume(
        volume, warping.posed_to_canonical_grid(z_pose, (16, 64, 64), flow))
    return warping.warp_volume(canonical, warping.canonical_to_posed_grid(z_pose, (16, 64, 64)))

  result = jax.eval_shape(to_canonical_and_back, volume, z_pose, flow)
  assert result.shape == (8, 16, 64, 64, 96) and result.dtype == jnp.float32
  grads = jax.eval_shape(
      jax.grad(lambda *args: jnp.sum(to_canonical_and_back(*args)), argnums=(0, 1, 2)),
      volume, z_pose, flow)
  assert [grad.shape for grad in grads] == [volume.shape, z_pose.shape, flow.shape]
