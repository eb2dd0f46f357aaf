"""Fields shared by every stage's config, so that one command line works for all stages.

Each experiment file (`configs/latent.py`, `configs/motion.py`, ...) starts from `base_config()` and
fills in its stage, model and data fields (config files import the library, never the reverse). Launch any of them with

  python -m vasa_jax.train --config=configs/<stage>.py[:variant] --workdir=DIR \
      [--config.batch_size=... --config.data_dir=...]
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """The top-level fields every stage reads; stage files override the values."""
  config = ml_collections.ConfigDict()
  # Which trainer runs: `vasa_jax.trainers.<stage>` (e.g. "latent", "motion").
  config.stage = ""
  # Seed of parameter initialisation, data order and per-step randomness.
  config.seed = 0
  # JAX PRNG implementation: "rbg" (XLA's RngBitGenerator; compiles several times faster than
  # "threefry2x32", whose unrolled hash makes CPU compilation of a model's init slow) or
  # "threefry2x32". Either gives the same values on any mesh for the same seed.
  config.prng_impl = "rbg"
  # Number of optimiser steps of the whole run (a resumed run continues to this step).
  config.total_steps = 1000
  # Global batch size: summed over all processes and devices.
  config.batch_size = 8
  # Directory prepared by `python -m data_prep.prepare` / `python -m data_prep.synthtalk` (holds manifest.json).
  config.data_dir = ""
  # Write averaged training metrics every this many steps (process 0 only).
  config.log_every_steps = 50
  # Save a checkpoint every this many steps (and at the end, and on SIGTERM).
  config.checkpoint_every_steps = 1000
  # Run the stage's evaluation (held-out metrics, image grids) every this many steps; 0: never.
  config.eval_every_steps = 1000
  # How many checkpoints to keep on disk.
  config.keep_checkpoints = 3

  # Device mesh. The sizes multiply to the number of devices; one axis may be -1 (the rest).
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # pure data parallelism: parameters replicated
  config.mesh.fsdp = 1  # data parallelism with parameters and optimiser state sharded (FSDP)
  config.mesh.model = 1  # tensor parallelism inside layers

  # Logical axis name -> mesh axes. Modules annotate parameters with logical names
  # (`nn.with_logical_partitioning`); these rules turn them into `NamedSharding`s. A name absent
  # here is replicated.
  config.sharding_rules = (
      ("batch", ("data", "fsdp")),  # the batch dimension of inputs and activations
      ("embed", "fsdp"),  # model width (transformer embedding, conv input channels)
      ("channels", "fsdp"),  # conv output channels
      ("mlp", "model"),  # transformer MLP hidden units
      ("heads", "model"),  # attention heads
  )

  # Input pipeline fields shared by all stages; stages add their own.
  config.data = ml_collections.ConfigDict()
  # Grain worker processes decoding examples (0: decode in the training process).
  config.data.num_workers = 0
  # Batches prefetched per worker.
  config.data.prefetch_batches = 2
  return config
