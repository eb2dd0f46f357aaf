"""A small regression task for testing the shared training loop (not a stage of the model).

It predicts the source frame's head pose from the downsampled source image with an MLP whose
parameters carry logical axis names, trained with AdamW and an EMA of the parameters: the same
kinds of state a real stage checkpoints and shards.
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vasa_jax.training import base_config
from vasa_jax.data import input_pipeline
from vasa_jax.training import loop


class PoseRegressor(nn.Module):
  """[B, S, S, 3] uint8 image -> [B, 3] head pose."""
  hidden: int = 32

  @nn.compact
  def __call__(self, images, dropout_rng=None):
    features = images.astype(jnp.float32).reshape(images.shape[0], -1) / 255.0  # [B, S*S*3]
    features = nn.Dense(self.hidden, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", "mlp")))(features)
    features = nn.relu(features)
    if dropout_rng is not None:  # randomness from the step RNG, so resumption must replay it
      features = features * jax.random.bernoulli(dropout_rng, 0.9, features.shape) / 0.9
    return nn.Dense(3, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("mlp", "embed")))(features)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  ema_params: dict


def config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  cfg = base_config.base_config()
  cfg.stage = "toy"
  cfg.data_dir = data_dir
  cfg.batch_size = 8
  cfg.total_steps = 8
  cfg.log_every_steps = 2
  cfg.checkpoint_every_steps = 4
  cfg.eval_every_steps = 0
  cfg.learning_rate = 1e-2
  cfg.hidden_units = 32
  cfg.update(overrides)
  return cfg


def make_task(cfg, evaluate=None, process_index=0, process_count=1) -> loop.Task:
  model = PoseRegressor(hidden=cfg.hidden_units)
  optimizer = optax.adamw(cfg.learning_rate)

  def init_state(rng):
    params = model.init(rng, jnp.zeros((1, 16, 16, 3), jnp.uint8))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), ema_params=params)

  def train_step(state, batch, rng, frozen):  # pylint: disable=unused-argument
    def loss_fn(params):
      prediction = model.apply({"params": params}, batch["source_image"], dropout_rng=rng)
      return jnp.mean((prediction - batch["source_head_pose"]) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = optax.incremental_update(params, state.ema_params, step_size=0.1)
    return (TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                       ema_params=ema_params), {"loss": loss})

  iterator = input_pipeline.stage1_iterator(
      cfg.data_dir, "train", batch_size=cfg.batch_size, image_size=16, seed=cfg.seed,
      process_index=process_index, process_count=process_count)
  return loop.Task(init_state=init_state, train_step=train_step, train_iterator=iterator,
                   evaluate=evaluate)
