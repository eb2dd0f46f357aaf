"""Test set-up: 8 simulated CPU devices, so multi-device sharding is tested on any machine.

XLA reads the flag when JAX initialises its backends, so it is set before any test imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):  # pylint: disable=unused-argument
  """One persistent compilation cache per test session: identical programs compiled by several
  tests (a resumed run recompiles its train step) are compiled once."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="jax_cache_"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
