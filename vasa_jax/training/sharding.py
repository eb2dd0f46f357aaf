"""Device mesh from the config, and `NamedSharding`s from logical axis rules.

Modules name their parameter axes logically (`nn.with_logical_partitioning(init, ("embed",
"mlp"))`); `config.sharding_rules` maps logical names to mesh axes. A train state built by a
stage's init function carries those names (flax `nn.Partitioned` boxes); `state_shardings` reads
them off an abstract state and the loop stores the state unboxed, placed by those shardings.

Activations are constrained by the same rules while the loop traces its step inside
`activation_rules(rules)` (modules call `constrain_activation`); outside it, and outside a mesh
context, the constraints do nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
# The logical axis rules that `constrain_activation` applies (None: it does nothing).
_ACTIVATION_RULES: contextvars.ContextVar = contextvars.ContextVar("activation_rules",
                                                                  default=None)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves the one -1 axis of `config.mesh` and checks the sizes multiply to the devices."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  free_axes = [i for i, size in enumerate(sizes) if size == -1]
  if len(free_axes) > 1 or any(size == 0 or size < -1 for size in sizes):
    raise ValueError(f"config.mesh {dict(mesh_config)}: sizes must be positive, at most one -1")
  known = math.prod(size for size in sizes if size != -1)
  if free_axes:
    if num_devices % known:
      raise ValueError(f"config.mesh {dict(mesh_config)} does not divide {num_devices} devices")
    sizes[free_axes[0]] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"config.mesh {dict(mesh_config)} holds {math.prod(sizes)} devices, there are "
        f"{num_devices}")
  return tuple(sizes)


def create_mesh(mesh_config: Mapping[str, int],
                devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("data", "fsdp", "model") mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)


@contextlib.contextmanager
def activation_rules(rules: Sequence[tuple[str, Any]]):
  """Within: `constrain_activation` maps logical names by `rules` (use it under a mesh context,
  e.g. `jax.sharding.use_abstract_mesh`). Flax's own `nn.logical_axis_rules` stays unset, so
  parameters are not re-constrained inside the step (they arrive placed by their shardings)."""
  token = _ACTIVATION_RULES.set(tuple(rules))
  try:
    yield
  finally:
    _ACTIVATION_RULES.reset(token)


def constrain_activation(value: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """`value` constrained to the sharding of its logical axis `names` under `activation_rules`
  (a no-op outside them)."""
  rules = _ACTIVATION_RULES.get()
  if rules is None:
    return value
  return nn.with_logical_constraint(value, tuple(names), rules=rules)


def _divisible_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Replicates the dimensions whose size the mesh axes assigned to them do not divide."""
  axes = []
  for size, mesh_axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
    ways = math.prod(mesh.shape[name] for name in names)
    axes.append(mesh_axes if size % ways == 0 else None)
  return PartitionSpec(*axes)


def state_shardings(abstract_boxed_state: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, Any]]) -> Any:
  """Shardings (a pytree like the unboxed state) from the logical names in a boxed state.

  A dimension that its mesh axes do not divide (a 3-channel output layer over 4 FSDP shards) is
  replicated instead.
  """
  logical_specs = nn.get_partition_spec(abstract_boxed_state)
  return jax.tree.map(
      lambda logical, leaf: NamedSharding(mesh, _divisible_spec(
          nn.logical_to_mesh_axes(logical, tuple(rules)), leaf.shape, mesh)),
      logical_specs, nn.meta.unbox(abstract_boxed_state),
      is_leaf=lambda x: isinstance(x, PartitionSpec))


def abstract_state(abstract_boxed_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of the unboxed state, each with its sharding (what Orbax restores into)."""
  return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      nn.meta.unbox(abstract_boxed_state), shardings)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def replicated_over(tree: Any) -> NamedSharding:
  """Replication over the mesh of `tree`'s first array (a train state; an array committed to
  devices without a mesh: over those devices)."""
  sharding = jax.tree.leaves(tree)[0].sharding
  if isinstance(sharding, NamedSharding):
    return replicated(sharding.mesh)
  devices = sorted(sharding.device_set, key=lambda device: device.id)
  return replicated(Mesh(np.array(devices), ("devices",)))


def put_replicated(host_tree: Any, sharding: NamedSharding) -> Any:
  """Host (numpy) values, the same on every process, as global arrays replicated by `sharding`
  (what a jitted evaluation takes as arguments on one host or many)."""
  return jax.tree.map(
      lambda value: jax.make_array_from_process_local_data(sharding, np.asarray(value)),
      host_tree)


def parameter_count(tree: Any) -> int:
  """Number of scalars in a (possibly abstract, possibly boxed) pytree of arrays."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nn.meta.unbox(tree)))
