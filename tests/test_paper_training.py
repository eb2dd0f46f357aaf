"""Training at paper scale: the sharded stage-1 step moves parameters, not the batch, between
devices; bfloat16 compute and model-level remat against float32 and no remat (both stages)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import latent as latent_config
from configs import motion as motion_config
from tests import experiment_scripts
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import motion_dit
from vasa_jax.trainers import latent
from vasa_jax.training import loop
from vasa_jax.training import sharding as sharding_lib

bench = experiment_scripts.load("bench_train")


def parameter_buffer_shapes(abstract_state, mesh_sizes=(2, 4, 8)) -> set[tuple[int, ...]]:
  """Shapes of every state leaf and of its shards (one dimension split 2, 4 or 8 ways), with
  their dimensions sorted (a weight gradient may be reduced transposed)."""
  shapes = set()
  for leaf in jax.tree.leaves(abstract_state):
    shape = tuple(leaf.shape)
    shapes.add(tuple(sorted(shape)))
    for axis, size in enumerate(shape):
      for ways in mesh_sizes:
        if size % ways == 0:
          shapes.add(tuple(sorted(shape[:axis] + (size // ways,) + shape[axis + 1:])))
  return shapes


@pytest.mark.slow
def test_sharded_stage1_step_gathers_parameters_not_the_batch():
  """The issue's warp (and FSDP-sharded convolutions) gathered the global batch's volumes and
  feature maps on every device. On a data x fsdp mesh of 8 devices, every all-gather,
  all-reduce and reduce-scatter buffer of the compiled step must be a parameter (or a shard of
  one, or its gradient), or carry less than half a volume per example: latent codes (the
  contrastive cycle compares them across the batch) and the warping generators' seed
  projections (256 values a frame here, 8,192 at 512 px; XLA gathers those rather than
  reduce-scatter their ~100x larger kernel gradients). And at a fixed per-device batch,
  doubling the devices (4 -> 8, along the FSDP axis over which channel-sharded activations would
  be gathered) must not grow a device's temporary memory."""
  config = bench.stage_config("latent_tiny", "float32", remat=False)
  parts = bench.latent_parts(config)
  four = sharding_lib.create_mesh({"data": 2, "fsdp": 2, "model": 1}, jax.devices()[:4])
  eight = sharding_lib.create_mesh({"data": 2, "fsdp": 4, "model": 1})
  compiled_four, _ = bench.compile_train_step(parts, four, batch_size=4)
  compiled_eight, _ = bench.compile_train_step(parts, eight, batch_size=8)

  abstract = nn.meta.unbox(jax.eval_shape(parts.init_state, loop.root_rng(config)))
  parameter_shapes = parameter_buffer_shapes(abstract)
  volume = (config.model.volume_channels * config.model.volume_depth
            * (config.image_size // 8) ** 2)  # values per example: 8 x 4 x 8 x 8
  gathered_parameters = 0
  batch_sized = []
  for collective in bench.collectives(compiled_eight.as_text()):
    if collective.kind not in ("all-gather", "all-reduce", "reduce-scatter"):
      continue  # all-to-all and permutes move a device's own share of the batch
    for dtype, shape in collective.shapes:
      elements = math.prod(shape)
      if tuple(sorted(shape)) in parameter_shapes:
        gathered_parameters += collective.kind == "all-gather" and elements > 100
      elif elements / 8 >= volume / 2:  # the global batch is 8
        batch_sized.append((collective.kind, dtype, shape, collective.line[:300]))
  assert not batch_sized, batch_sized
  assert gathered_parameters > 10  # FSDP: the sharded kernels are gathered for use

  temporaries = {devices: bench.memory(compiled)["temporaries"]
                 for devices, compiled in ((4, compiled_four), (8, compiled_eight))}
  assert temporaries[8] <= 1.05 * temporaries[4], temporaries


# Stage-1 loss terms that decode images beyond the reenacted one (`latent.renders_needed`).
EXTRA_RENDER_TERMS = ("pairwise_l1", "pairwise_vgg", "transfer_cycle", "dynamics_locality",
                      "identity", "identity_cycle", "cycle")


def random_batch(spec: dict, seed: int) -> dict:
  """Random values of the shapes and dtypes of `spec` (ShapeDtypeStructs)."""
  generator = np.random.default_rng(seed)

  def value(struct):
    dtype = np.dtype(struct.dtype)
    if dtype == np.uint8:
      return generator.integers(0, 256, struct.shape, np.uint8)
    if dtype == np.bool_:
      return np.ones(struct.shape, bool)
    if np.issubdtype(dtype, np.integer):
      return generator.integers(0, 4, struct.shape).astype(dtype)
    return generator.standard_normal(struct.shape).astype(dtype)

  return {name: value(struct) for name, struct in spec.items()}


@pytest.mark.parametrize("stage,loss_name,grad_name", [
    ("latent_tiny", "loss/generator_total", "generator_grad_norm"),
    ("motion_tiny", "loss", "grad_norm")])
def test_bfloat16_step_is_close_to_float32_with_finite_gradients(stage, loss_name, grad_name):
  """One train step from the same float32 parameters and batch, computed in float32 and in
  bfloat16 (parameters, norms and softmax float32): the bf16 loss is within 2% of the f32 one,
  its gradients are finite and the updated parameters stay float32. Stage 1 keeps the terms of
  the reenacted render (L1, GAN, feature matching, head pose, expression): one decode a step
  (the other renders run the same layers, and compile several times longer)."""
  results = {}
  for dtype in ("float32", "bfloat16"):
    config = bench.stage_config(stage, dtype, remat=False)
    if stage.startswith("latent"):
      for term in EXTRA_RENDER_TERMS:
        config.loss[term] = 0.0
      assert latent.renders_needed(latent.loss_weights(config)) == ("reenacted",)
    parts = bench.stage_parts(stage, config)
    rng = loop.root_rng(config)
    state = jax.jit(lambda key, parts=parts: nn.meta.unbox(parts.init_state(key)))(rng)
    batch = random_batch(parts.batch(4), seed=0)
    new_state, metrics = jax.jit(parts.train_step)(state, batch, rng, parts.frozen)
    results[dtype] = jax.device_get(metrics)
    assert all(leaf.dtype != jnp.bfloat16 for leaf in jax.tree.leaves(new_state))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(new_state)
               if jnp.issubdtype(leaf.dtype, jnp.floating))
  assert np.isfinite(results["bfloat16"][grad_name]) and results["bfloat16"][grad_name] > 0
  np.testing.assert_allclose(results["bfloat16"][loss_name], results["float32"][loss_name],
                             rtol=2e-2)


def test_model_level_remat_gives_the_same_stage1_gradients():
  model_config = latent_config.get_config("tiny").model
  rng = np.random.default_rng(1)
  source, driver = (jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
                    for _ in range(2))
  cotangent = jnp.asarray(rng.standard_normal((2, 64, 64, 3)), jnp.float32)
  models = {}
  for remat in (False, True):
    remat_config = model_config.copy_and_resolve_references()
    remat_config.remat = remat
    models[remat] = autoencoder_lib.FaceAutoencoder.from_config(remat_config)
  params = jax.jit(models[False].init)(jax.random.key(0), source, driver)["params"]

  def gradients(model):
    def loss(params):
      outputs = model.apply({"params": params}, source, driver)
      return jnp.mean(outputs["reenacted_image"] * cotangent)
    return jax.jit(jax.grad(loss))(params)

  # Gradients of up to ~1e-2; the two programs round differently (up to ~5e-9 apart on CPU),
  # a rematerialisation that recomputed anything else would differ by the order of the gradient.
  plain, rematerialised = gradients(models[False]), gradients(models[True])
  assert jax.tree.structure(plain) == jax.tree.structure(rematerialised)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
               plain, rematerialised)
  assert max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(plain)) > 1e-3


def test_model_level_remat_gives_the_same_stage2_gradients():
  model_config = motion_config.get_config("tiny").model
  models = {}
  for remat in (False, True):
    remat_config = model_config.copy_and_resolve_references()
    remat_config.remat = remat
    models[remat] = motion_dit.MotionDiT.from_config(remat_config)
  model = models[False]
  rng = np.random.default_rng(2)

  def normal(*shape):
    return jnp.asarray(rng.standard_normal((2,) + shape), jnp.float32)
  inputs = dict(noisy_motion=normal(model.window, model.motion_dim),
                timestep=jnp.asarray([3, 700], jnp.int32),
                previous_motion=normal(model.num_previous, model.motion_dim),
                previous_audio=normal(model.num_previous, model.audio_dim),
                audio=normal(model.window, model.audio_dim), gaze=normal(2),
                distance=normal(), emotion=normal(model.emotion_dim))
  target = normal(model.window, model.motion_dim)
  params = jax.jit(model.init)(jax.random.key(0), **inputs)["params"]

  def gradients(model):
    def loss(params):
      return jnp.mean(jnp.square(model.apply({"params": params}, **inputs) - target))
    return jax.jit(jax.grad(loss))(params)

  plain, rematerialised = gradients(models[False]), gradients(models[True])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
               plain, rematerialised)
  assert max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(plain)) > 1e-3
