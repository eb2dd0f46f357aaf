"""VASA-1's motion diffusion transformer H(X^t, t, C): predicts the clean motion window X^0.

The conditions are concatenated with the motion sequence along time (VASA-1 section 3.2). The
token sequence, length 4 + K + W, is

  [gaze, distance, emotion, diffusion time, K previous frames, W current frames]

where a previous token is proj(X_pre) + proj(A_pre) and a current token is proj(X^t) + proj(A)
+ the time token; a learned position embedding is added per slot. A pre-LN transformer encoder
runs over all tokens and the prediction is read from the W current tokens. Dropped conditions
(the masks of `vasa_jax.diffusion.conditioning`) are replaced by learned null embeddings: per
token for gaze, distance and emotion, per frame for audio (dropped audio or `audio_valid`
False), and for the whole previous block when drop_previous. With `carry_previous` the
prediction is the network's output plus a learned carry [W, M] (initialised to 1) times the last
previous frame X_pre[:, -1] (unless drop_previous): a linear skip from the frame the window
continues, which each output frame and motion dimension keeps as much of as training finds
useful. With `entry_blend_frames` > 0 (and X_pre given) the window is joined onto X_pre: its
first frame is X_pre[:, -1] plus a step predicted from the first frame's token (zero at
initialisation), and the offset between that and the window's own first frame is added to every
frame i faded by exp(-i / entry_blend_frames), so that the window keeps its own course after a
few frames.

Parameters carry logical axis names ("embed", "mlp", "heads", and "layers" for the stacked
layer axis when `scan_layers`) for `config.sharding_rules`. Computation runs in `dtype`,
parameters are `param_dtype` (float32); layer norms, attention softmax and the output head run
in float32.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vasa_jax.diffusion import conditioning
from vasa_jax.models import layers

Dtype = Any

# Keyword arguments of `MotionDiT.__call__` that `make_denoise_fn` takes from `conditions`.
CONDITION_KEYS = ("previous_motion", "previous_audio", "audio", "gaze", "distance", "emotion")
# Condition tokens before the previous and current frames: gaze, distance, emotion, time.
NUM_CONDITION_TOKENS = 4
# Standard deviation of the initial position and null embeddings.
EMBEDDING_INIT_STD = 0.02


def _dense(features: int, kernel_axes: tuple[Optional[str], Optional[str]], dtype: Dtype,
           param_dtype: Dtype, name: str,
           kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()) -> nn.Dense:
  """Dense layer whose kernel [in, out] and bias [out] carry logical axis names."""
  return nn.Dense(
      features, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(kernel_init, kernel_axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (kernel_axes[1],)),
      name=name)


def layer_norm(features: jax.Array, dtype: Dtype, param_dtype: Dtype, name: str) -> jax.Array:
  """Layer normalisation over the last axis, computed in float32, returned in `dtype`."""
  normalised = nn.LayerNorm(
      dtype=jnp.float32, param_dtype=param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
      name=name)(features.astype(jnp.float32))
  return normalised.astype(dtype)


def timestep_embedding(timestep: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [B, dim] (cosines then sines) of integer diffusion timesteps [B]."""
  half = dim // 2
  frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = timestep.astype(jnp.float32)[:, None] * frequencies[None, :]  # [B, half]
  embedding = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
  return jnp.pad(embedding, ((0, 0), (0, dim - 2 * half)))


class SelfAttention(nn.Module):
  """Multi-head self-attention; logits and softmax in float32."""
  num_heads: int  # attention heads; the width must be divisible by it
  dropout: float = 0.0  # dropout on the attention output
  deterministic: bool = True  # disables dropout
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:  # [B, L, D] -> [B, L, D]
    width = tokens.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by {self.num_heads} heads")
    head_dim = width // self.num_heads

    def projection(name):
      return nn.DenseGeneral(
          (self.num_heads, head_dim), dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                   ("embed", "heads", None)),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("heads", None)),
          name=name)(tokens)  # [B, L, H, Dh]

    query = projection("query") * head_dim**-0.5
    key, value = projection("key"), projection("value")
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key,
                        preferred_element_type=jnp.float32)  # [B, H, L, L]
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)  # [B, L, H, Dh]
    output = nn.DenseGeneral(
        width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 ("heads", None, "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name="output")(attended)  # [B, L, D]
    return nn.Dropout(self.dropout, deterministic=self.deterministic)(output)


class TransformerBlock(nn.Module):
  """Pre-LN transformer encoder block: x + attention(LN(x)), then x + MLP(LN(x)).

  Returns (tokens, None) so that it can be the body of `nn.scan` over layers.
  """
  num_heads: int  # attention heads
  mlp_dim: int  # hidden units of the MLP
  dropout: float = 0.0  # dropout on the attention and MLP outputs
  deterministic: bool = True  # disables dropout
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> tuple[jax.Array, None]:  # [B, L, D]
    # The residual stream stays split along the batch only (`layers.batch_sharded`): FSDP gathers
    # the weights, not the tokens. The MLP's hidden units may follow a "model" axis.
    tokens = layers.batch_sharded(tokens)
    width = tokens.shape[-1]
    tokens = tokens + SelfAttention(
        self.num_heads, self.dropout, self.deterministic, self.dtype, self.param_dtype,
        name="attention")(layer_norm(tokens, self.dtype, self.param_dtype, "attention_norm"))
    hidden = _dense(self.mlp_dim, ("embed", "mlp"), self.dtype, self.param_dtype, "mlp_in")(
        layer_norm(tokens, self.dtype, self.param_dtype, "mlp_norm"))  # [B, L, mlp]
    hidden = _dense(width, ("mlp", "embed"), self.dtype, self.param_dtype, "mlp_out")(
        nn.gelu(hidden))
    tokens = tokens + nn.Dropout(self.dropout, deterministic=self.deterministic)(hidden)
    return layers.batch_sharded(tokens), None


class MotionDiT(nn.Module):
  """The motion diffusion transformer; build it with `from_config` (see the module docstring)."""
  motion_dim: int  # M: size of a motion frame [z_pose, z_dyn]
  audio_dim: int  # A: size of a per-frame audio feature (Wav2Vec2 hidden size)
  emotion_dim: int  # E: size of the emotion vector (0 allowed: its token is then a learned bias)
  window: int  # W: frames generated per window
  num_previous: int  # K: frames of the previous window conditioning this one
  num_layers: int = 8  # transformer blocks (VASA-1: 8)
  embed_dim: int = 512  # token width D (VASA-1: 512)
  num_heads: int = 8  # attention heads (VASA-1: 8)
  mlp_dim: int = 2048  # hidden units of each block's MLP
  dropout: float = 0.0  # dropout rate inside the blocks (active when not deterministic)
  # Add a learned carry [W, M] times the last previous frame X_pre[:, -1] to the prediction (when
  # the previous block is not dropped): a direct path from the frame the window continues.
  carry_previous: bool = True
  # > 0: the first frame is X_pre's last plus a predicted step, and the offset between that and
  # the window's own prediction fades over the window as exp(-i / entry_blend_frames) (frames).
  entry_blend_frames: float = 0.0
  remat: bool = False  # rematerialise each block in the backward pass (saves activation memory)
  scan_layers: bool = False  # run the blocks with `nn.scan` (parameters stacked on a layer axis)
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict) -> "MotionDiT":
    """The model described by `config.model` of configs/motion.py."""
    return cls(
        motion_dim=model_config.motion_dim, audio_dim=model_config.audio_dim,
        emotion_dim=model_config.emotion_dim, window=model_config.window,
        num_previous=model_config.num_previous, num_layers=model_config.num_layers,
        embed_dim=model_config.embed_dim, num_heads=model_config.num_heads,
        mlp_dim=model_config.mlp_dim, dropout=model_config.dropout,
        carry_previous=model_config.carry_previous,
        entry_blend_frames=model_config.entry_blend_frames, remat=model_config.remat,
        scan_layers=model_config.scan, dtype=layers.compute_dtype(model_config.dtype),
        param_dtype=jnp.float32)

  def _embedding(self, name: str, shape: tuple[int, ...]) -> jax.Array:
    """A learned embedding table `shape` (last axis "embed"), in the compute dtype."""
    names = (None,) * (len(shape) - 1) + ("embed",)
    table = self.param(name, nn.with_logical_partitioning(
        nn.initializers.normal(EMBEDDING_INIT_STD), names), shape, self.param_dtype)
    return jnp.asarray(table, self.dtype)

  def _project(self, inputs: jax.Array, name: str) -> jax.Array:
    """Input features [..., F] -> tokens [..., D] in the compute dtype."""
    return _dense(self.embed_dim, (None, "embed"), self.dtype, self.param_dtype, name)(
        inputs.astype(self.dtype))

  def _condition_token(self, inputs: jax.Array, dropped: jax.Array, name: str) -> jax.Array:
    """One token [B, D]: the projected condition [B, F], or the learned null where `dropped` [B].

    An empty condition (F = 0, e.g. no emotion model yet) is a learned constant token instead.
    """
    null = self._embedding(f"null_{name}", (self.embed_dim,))
    if inputs.shape[-1] == 0:
      present = self._embedding(f"{name}_token", (self.embed_dim,))
    else:
      present = self._project(inputs, f"{name}_projection")
    return jnp.where(dropped[:, None], null, present)

  def _check_shapes(self, noisy_motion, timestep, previous_motion, previous_audio, audio, gaze,
                    distance, emotion):
    """Raises ValueError unless every input has the shape `__call__` documents."""
    batch = noisy_motion.shape[0]
    expected = {
        "noisy_motion": (noisy_motion, (batch, self.window, self.motion_dim)),
        "timestep": (timestep, (batch,)),
        "distance": (distance, (batch,)),
        "previous_motion": (previous_motion, (batch, self.num_previous, self.motion_dim)),
        "previous_audio": (previous_audio, (batch, self.num_previous, self.audio_dim)),
        "audio": (audio, (batch, self.window, self.audio_dim)),
        "gaze": (gaze, (batch, 2)),
        "emotion": (emotion, (batch, self.emotion_dim)),
    }
    for name, (array, shape) in expected.items():
      if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")

  def _blocks(self, tokens: jax.Array, deterministic: bool) -> jax.Array:
    """The `num_layers` transformer blocks, looped or scanned, optionally rematerialised."""
    # Inside a scan, common-subexpression elimination cannot undo rematerialisation (flax docs).
    block_class = (nn.remat(TransformerBlock, prevent_cse=not self.scan_layers) if self.remat
                   else TransformerBlock)
    block_fields = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                        deterministic=deterministic, dtype=self.dtype,
                        param_dtype=self.param_dtype)
    if self.scan_layers:
      scanned_blocks = nn.scan(
          block_class, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          length=self.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      tokens, _ = scanned_blocks(**block_fields, name="blocks")(tokens)
      return tokens
    for index in range(self.num_layers):
      tokens, _ = block_class(**block_fields, name=f"block_{index}")(tokens)
    return tokens

  @nn.compact
  def __call__(self, noisy_motion: jax.Array, timestep: jax.Array, previous_motion: jax.Array,
               previous_audio: jax.Array, audio: jax.Array, gaze: jax.Array,
               distance: jax.Array, emotion: jax.Array,
               drops: Optional[Mapping[str, jax.Array]] = None,
               deterministic: bool = True) -> jax.Array:
    """Predicted clean motion X^0 [B, W, M] in float32.

    noisy_motion [B, W, M] (X^t); timestep [B] int; previous_motion [B, K, M] (X_pre);
    previous_audio [B, K, A] (A_pre); audio [B, W, A]; gaze [B, 2] (theta, phi); distance [B];
    emotion [B, E]; drops: masks keyed as `conditioning.sample_condition_dropout` returns them
    (drop_audio, drop_gaze, drop_distance, drop_emotion, drop_previous [B] bool; audio_valid
    [B, W] bool); a missing key means nothing dropped. `deterministic=False` enables dropout
    (needs a "dropout" rng when `dropout` > 0).
    """
    self._check_shapes(noisy_motion, timestep, previous_motion, previous_audio, audio, gaze,
                       distance, emotion)
    batch = noisy_motion.shape[0]

    def mask(key):
      return conditioning.mask_or_default(drops, key, (batch,))

    audio_valid = conditioning.mask_or_default(drops, conditioning.AUDIO_VALID_KEY,
                                               (batch, self.window))
    gaze_token = self._condition_token(gaze, mask("drop_gaze"), "gaze")  # [B, D]
    distance_token = self._condition_token(distance[:, None], mask("drop_distance"), "distance")
    emotion_token = self._condition_token(emotion, mask("drop_emotion"), "emotion")
    time_hidden = nn.silu(_dense(self.embed_dim, (None, "mlp"), self.dtype, self.param_dtype,
                                 "time_hidden")(timestep_embedding(timestep, self.embed_dim)))
    time_token = _dense(self.embed_dim, ("mlp", "embed"), self.dtype, self.param_dtype,
                        "time_output")(time_hidden)  # [B, D]

    previous_tokens = (self._project(previous_motion, "previous_motion_projection")
                       + self._project(previous_audio, "previous_audio_projection"))  # [B, K, D]
    previous_dropped = mask("drop_previous")  # [B]
    previous_tokens = jnp.where(previous_dropped[:, None, None],
                                self._embedding("null_previous", (self.embed_dim,)),
                                previous_tokens)

    audio_tokens = jnp.where((audio_valid & ~mask("drop_audio")[:, None])[..., None],
                             self._project(audio, "audio_projection"),
                             self._embedding("null_audio", (self.embed_dim,)))  # [B, W, D]
    current_tokens = self._project(noisy_motion, "motion_projection") + audio_tokens

    condition_tokens = jnp.stack([gaze_token, distance_token, emotion_token, time_token], axis=1)
    # The time also reaches every current token directly, not only through attention to its
    # token: with the token alone the tiny model barely used X_pre (see configs/motion.py).
    current_tokens = current_tokens + time_token[:, None, :]  # [B, W, D]
    tokens = jnp.concatenate([condition_tokens, previous_tokens, current_tokens], axis=1)
    num_tokens = NUM_CONDITION_TOKENS + self.num_previous + self.window
    tokens = tokens + self._embedding("position_embedding", (num_tokens, self.embed_dim))
    tokens = self._blocks(tokens, deterministic)  # [B, L, D]

    current = layer_norm(tokens[:, -self.window:], jnp.float32, self.param_dtype, "output_norm")
    prediction = _dense(self.motion_dim, ("embed", None), jnp.float32, self.param_dtype,
                        "output_projection")(current)  # [B, W, M]
    last_previous = previous_motion[:, -1].astype(jnp.float32)  # [B, M]
    if self.carry_previous:
      carry = self.param("previous_carry", nn.with_logical_partitioning(
          nn.initializers.ones_init(), (None, None)), (self.window, self.motion_dim),
          self.param_dtype)  # [W, M]: the share of the last previous frame each output keeps
      carried = jnp.where(previous_dropped[:, None], 0.0, last_previous)  # [B, M]
      prediction = prediction + carry.astype(jnp.float32) * carried[:, None, :]
    if self.entry_blend_frames > 0:
      # Zero-initialised: an untrained window starts by holding X_pre's last frame.
      entry_step = _dense(self.motion_dim, ("embed", None), jnp.float32, self.param_dtype,
                          "entry_step_projection", nn.initializers.zeros_init())(
                              current[:, 0])  # [B, M]
      offset = last_previous + entry_step - prediction[:, 0]
      offset = jnp.where(previous_dropped[:, None], 0.0, offset)  # [B, M]
      fade = jnp.exp(-jnp.arange(self.window, dtype=jnp.float32) / self.entry_blend_frames)
      prediction = prediction + fade[None, :, None] * offset[:, None, :]
    return prediction


def make_denoise_fn(model: MotionDiT, variables: Any) -> Callable[..., jax.Array]:
  """`denoise_fn(noisy_motion, timestep, conditions, drops) -> predicted X^0` for
  `vasa_jax.diffusion` samplers and guidance; `conditions` is a dict with `CONDITION_KEYS`."""
  def denoise_fn(noisy_motion, timestep, conditions, drops):
    return model.apply(variables, noisy_motion, timestep, drops=drops,
                       **{key: conditions[key] for key in CONDITION_KEYS})
  return denoise_fn


def abstract_variables(model: MotionDiT, batch_size: int = 1) -> Any:
  """Boxed (logically partitioned) abstract variables of `model`, without allocating them."""
  def array(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct((batch_size,) + shape, dtype)
  return jax.eval_shape(
      model.init, jax.random.key(0), array(model.window, model.motion_dim),
      array(dtype=jnp.int32), array(model.num_previous, model.motion_dim),
      array(model.num_previous, model.audio_dim), array(model.window, model.audio_dim),
      array(2), array(), array(model.emotion_dim))


def parameter_count(variables: Any) -> int:
  """Number of parameters in (abstract, possibly boxed) `variables["params"]`."""
  return sum(leaf.size for leaf in jax.tree.leaves(nn.meta.unbox(variables["params"])))
