"""One module per stage, named by the config's `stage` field.

Each provides `train_and_evaluate(config, workdir, mesh)`, building a `vasa_jax.training.loop.Task`
(init, train step, data iterator, evaluation) and running `vasa_jax.training.loop.train`.
"""
