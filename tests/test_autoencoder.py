"""The stage-1 face autoencoder: API shapes, rigid identity at init, bf16, remat, sizes, sharding.

Random numbers come from "rbg" PRNG keys: with jax 0.10 on CPU, compiling the default threefry
generator costs seconds per array shape, which would dominate this file's runtime.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from vasa_jax.training import base_config
from configs import latent
from vasa_jax.models import autoencoder
from vasa_jax.models import encoders
from vasa_jax.models import layers
from vasa_jax.models.autoencoder import FaceAutoencoder
from vasa_jax.training import sharding as sharding_lib

BATCH = 4


def rbg_key(seed=0):
  return jax.random.key(seed, impl="rbg")


def images(size, seed):
  return jax.random.uniform(rbg_key(seed), (BATCH, size, size, 3), jnp.float32, -1, 1)


def run_api(module, source, driver):
  """Every API method of `module` (bound), and the parts the initial-state checks read."""
  canonical_volume, z_id = module.encode_appearance(source)
  z_pose, z_dyn = module.encode_motion(source)
  return dict(
      canonical_volume=canonical_volume, z_id=z_id, z_pose=z_pose, z_dyn=z_dyn,
      decoded=module.decode(canonical_volume, z_id, z_pose, z_dyn),
      driver_motion=module.encode_motion(driver),
      identity=module.encode_identity(source),
      posed_volume=module.appearance_encoder(source),
      source_flow=module.source_to_canonical(z_dyn, z_id),
      driver_flow=module.canonical_to_driver(z_dyn, z_id),
      forward=module(source, driver))


@pytest.fixture(scope="module")
def tiny():
  """(model config, model, float32 variables, source, driver, API outputs) of the tiny variant.

  The variables are initialised while running every API method, in one jitted function (one
  compilation); parameters do not depend on the call order, so they equal `model.init`'s.
  """
  model_config = latent.get_config("tiny").model
  model = FaceAutoencoder.from_config(model_config)
  source, driver = images(64, 1), images(64, 2)
  api_outputs, variables = jax.jit(functools.partial(model.init_with_output, method=run_api))(
      rbg_key(), source, driver)
  return model_config, model, variables, source, driver, api_outputs


@pytest.fixture(scope="module")
def tiny_api(tiny):
  return tiny[-1]


def with_fields(model_config, **fields):
  model_config = model_config.copy_and_resolve_references()
  model_config.update(fields)
  return model_config


def test_tiny_api_shapes_dtypes_and_round_trip(tiny, tiny_api):
  model_config, _, _, source, _, _ = tiny
  depth, height, width = autoencoder.volume_shape(model_config)
  assert (depth, height, width) == (4, 8, 8)
  expected_shapes = dict(
      canonical_volume=(BATCH, depth, height, width, model_config.volume_channels),
      z_id=(BATCH, model_config.identity_dim), z_pose=(BATCH, 7),
      z_dyn=(BATCH, model_config.dyn_dim), decoded=source.shape)
  for name, shape in expected_shapes.items():
    assert tiny_api[name].shape == shape, name
    assert tiny_api[name].dtype == jnp.float32, name
    assert np.all(np.isfinite(tiny_api[name])), name
  assert np.all(np.abs(tiny_api["decoded"]) <= 1)

  forward = tiny_api["forward"]
  assert forward["reenacted_image"].shape == source.shape
  assert np.all(np.abs(forward["reenacted_image"]) <= 1)
  np.testing.assert_allclose(forward["canonical_volume"], tiny_api["canonical_volume"],
                             atol=1e-5)
  np.testing.assert_allclose(forward["z_id"], tiny_api["identity"], atol=1e-5)
  np.testing.assert_allclose(forward["source_dyn"], tiny_api["z_dyn"], atol=1e-5)
  np.testing.assert_allclose(forward["driver_pose"], tiny_api["driver_motion"][0], atol=1e-5)
  np.testing.assert_allclose(forward["driver_dyn"], tiny_api["driver_motion"][1], atol=1e-5)


def test_batched_results_match_single_examples(tiny, tiny_api):
  _, model, variables, source, _, _ = tiny
  single_pose, single_dyn = jax.jit(
      lambda v, x: model.apply(v, x, method=FaceAutoencoder.encode_motion))(variables,
                                                                              source[1:2])
  np.testing.assert_allclose(single_pose, tiny_api["z_pose"][1:2], atol=1e-5)
  np.testing.assert_allclose(single_dyn, tiny_api["z_dyn"][1:2], atol=1e-5)


def test_initial_warps_are_rigid_identity(tiny_api):
  assert not np.any(tiny_api["z_pose"]), "zero-initialised pose head: identity pose"
  assert not np.any(tiny_api["source_flow"]), "zero-initialised flow output"
  assert not np.any(tiny_api["driver_flow"]), "zero-initialised flow output"
  assert np.any(tiny_api["z_dyn"])
  # Identity pose, zero flow and the zero-initialised G3D residual: V_app is the posed volume.
  np.testing.assert_allclose(tiny_api["canonical_volume"], tiny_api["posed_volume"], atol=1e-4)


def test_bfloat16_compute_keeps_float32_params(tiny):
  model_config, _, variables, source, driver, _ = tiny
  model = FaceAutoencoder.from_config(with_fields(model_config, dtype="bfloat16"))
  abstract = jax.eval_shape(model.init, rbg_key(), source, driver)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nn.meta.unbox(abstract)))
  assert jax.tree.structure(abstract) == jax.tree.structure(variables)
  outputs = jax.jit(model.apply)(variables, source, driver)
  assert outputs["reenacted_image"].dtype == jnp.float32
  assert outputs["canonical_volume"].dtype == jnp.bfloat16
  for name, value in outputs.items():
    assert np.all(np.isfinite(np.asarray(value, np.float32))), name


@pytest.mark.parametrize("block_class,shape,condition_dim", [
    (layers.ResBlock2D, (2, 8, 8, 4), None), (layers.ResBlock3D, (2, 4, 8, 8, 4), 6)])
def test_remat_blocks_give_the_same_gradients(block_class, shape, condition_dim):
  features = jax.random.normal(rbg_key(1), shape)
  condition = (None if condition_dim is None
               else jax.random.normal(rbg_key(2), (2, condition_dim)))
  block = block_class(8, num_groups=4)
  params = jax.jit(block.init)(rbg_key(), features, condition)["params"]
  remat_block = layers.residual_block_class(block_class, remat=True)(8, num_groups=4)

  def gradients(module):
    def loss(params, features):
      return jnp.mean(jnp.sin(module.apply({"params": params}, features, condition)))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, features)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               gradients(block), gradients(remat_block))


def test_remat_model_has_the_same_parameters(tiny):
  model_config, _, variables, source, driver, _ = tiny
  remat_model = FaceAutoencoder.from_config(with_fields(model_config, remat=True))
  abstract = jax.eval_shape(remat_model.init, rbg_key(), source, driver)
  assert jax.tree.structure(abstract) == jax.tree.structure(variables)


def test_paper_size_shapes_and_parameter_count():
  model_config = latent.get_config().model
  model = FaceAutoencoder.from_config(model_config)
  image = jax.ShapeDtypeStruct((1, 512, 512, 3), jnp.float32)
  outputs, abstract = jax.eval_shape(
      lambda key, x: model.init_with_output(
          key, x, x, capture_intermediates=lambda module, method: isinstance(
              module, encoders.AppearanceEncoder)), rbg_key(), image)
  counts = autoencoder.parameter_counts(abstract["params"])
  print("paper-size parameters:", {name: f"{count / 1e6:.1f}M" for name, count in counts.items()})
  assert 100e6 <= sharding_lib.parameter_count(abstract["params"]) == counts["total"] <= 300e6
  posed_volume, = abstract["intermediates"]["appearance_encoder"]["__call__"]
  assert posed_volume.shape == (1, 16, 64, 64, 96)
  assert outputs["canonical_volume"].shape == (1, 16, 64, 64, 96)
  assert outputs["z_id"].shape == (1, 512)
  assert outputs["driver_dyn"].shape == (1, 256)
  assert outputs["reenacted_image"].shape == (1, 512, 512, 3)


def test_256_variant_shapes():
  config = latent.get_config("paper_256")
  model = FaceAutoencoder.from_config(config.model)
  image = jax.ShapeDtypeStruct((2, config.image_size, config.image_size, 3), jnp.float32)
  outputs, _ = jax.eval_shape(model.init_with_output, rbg_key(), image, image)
  assert outputs["canonical_volume"].shape == (2, 16, 32, 32, 96)
  assert outputs["reenacted_image"].shape == (2, 256, 256, 3)


def test_image_size_override_propagates_to_the_model():
  config = latent.get_config("tiny")
  config.image_size = 128
  assert config.model.image_size == 128
  assert autoencoder.volume_shape(config.model) == (4, 16, 16)
  model_config = config.model.copy_and_resolve_references()
  model_config.decoder.upsample_channels = (16, 8)
  with pytest.raises(ValueError, match="upsamples 2 times"):
    FaceAutoencoder.from_config(model_config)
  with pytest.raises(ValueError, match="unknown"):
    latent.get_config("1024")


def test_logical_axis_names_and_shardings():
  model_config = latent.get_config("tiny").model
  abstract = autoencoder.abstract_variables(model_config)
  specs = nn.get_partition_spec(abstract)["params"]
  flat_specs = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
  conv_kernels = {jax.tree_util.keystr(path): spec for path, spec in flat_specs
                  if jax.tree_util.keystr(path).endswith("['conv']['kernel']")}
  assert len(conv_kernels) > 50
  for path, spec in conv_kernels.items():
    assert spec[-1] == "channels" and all(name is None for name in spec[:-1]), (path, spec)
  assert specs["source_to_canonical"]["seed"]["dense"]["kernel"] == PartitionSpec("embed", "mlp")
  assert all(isinstance(spec, PartitionSpec) and len(spec) for _, spec in flat_specs)

  mesh = sharding_lib.create_mesh({"data": 1, "fsdp": -1, "model": 1})
  assert mesh.shape["fsdp"] == 8
  shardings = sharding_lib.state_shardings(abstract, mesh, base_config.base_config().sharding_rules)
  decoder_kernel = shardings["params"]["decoder"]["projection"]["conv"]["kernel"]
  assert decoder_kernel.spec == PartitionSpec(None, None, None, "fsdp")  # 32 channels / 8
  rgb_kernel = shardings["params"]["decoder"]["to_rgb"]["conv"]["kernel"]
  assert rgb_kernel.spec == PartitionSpec(None, None, None, None)  # 3 channels: replicated


def test_decoder_sees_dyn_renders_from_z_dyn_besides_the_warp(tiny):
  """With `decoder.sees_dyn`, G2D's norms modulate on z_dyn; without it only the warp does."""
  model_config, _, _, _, _, tiny_api = tiny
  other_dyn = tiny_api["z_dyn"][::-1]
  decoded = {}
  for sees_dyn in (False, True):
    model = FaceAutoencoder.from_config(
        with_fields(model_config, decoder=dict(model_config.decoder, sees_dyn=sees_dyn)))
    decode_inputs = [tiny_api[name] for name in ("canonical_volume", "z_id", "z_pose", "z_dyn")]
    # Only the modules that decoding uses (the driver-side warp and G2D).
    variables = jax.jit(functools.partial(model.init, method=FaceAutoencoder.decode))(
        rbg_key(), *decode_inputs)
    decoder_params = variables["params"]["decoder"]
    has_modulation = any("modulation" in "/".join(map(str, path)) for path, _ in
                         jax.tree_util.tree_flatten_with_path(decoder_params)[0])
    assert has_modulation == sees_dyn
    # Random decoder weights (zero-initialised modulation included); the flow stays exactly 0.
    leaves, treedef = jax.tree.flatten(decoder_params)
    noisy = [leaf + 0.3 * jax.random.normal(rbg_key(index), leaf.shape, leaf.dtype)
             for index, leaf in enumerate(leaves)]
    variables = {"params": {**variables["params"],
                            "decoder": jax.tree.unflatten(treedef, noisy)}}
    decode = jax.jit(lambda v, dyn: model.apply(v, *decode_inputs[:3], dyn,
                                                method=FaceAutoencoder.decode))
    decoded[sees_dyn] = (decode(variables, tiny_api["z_dyn"]), decode(variables, other_dyn))
  np.testing.assert_array_equal(*decoded[False])  # zero flow: z_dyn has no path to the image
  assert np.mean(np.abs(decoded[True][0] - decoded[True][1])) > 1e-3
