"""Test set-up: 8 simulated CPU devices, so multi-device sharding is tested on any machine.

XLA reads the flag when JAX initialises its backends, so it is set before any test imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
