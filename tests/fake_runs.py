"""Training workdirs without training: states saved as the training loop saves them."""

import os

import flax.linen as nn
import grain
import jax

from vasa_jax.training import checkpoint


def init_params(init_fn, *args):
  """`jax.jit(init_fn)(*args)["params"]`, unboxed, compiled without XLA's backend optimisations
  (the tiny autoencoder's init compiles in half the time; the values are the same
  initialisation)."""
  compiled = jax.jit(init_fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  return nn.meta.unbox(compiled(*args)["params"])


def save_run(workdir, config, state, step=0):
  """Writes `state` as checkpoint `step` of a training run in `workdir`, as the loop does."""
  os.makedirs(workdir, exist_ok=True)
  checkpoint.write_config(workdir, config)
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=1,
                                         save_interval_steps=1)
  checkpointer.save(step, state, iter(grain.MapDataset.range(1).to_iter_dataset()), force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
