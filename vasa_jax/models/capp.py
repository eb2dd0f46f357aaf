"""CAPP (VASA-1's Contrastive Audio and Pose Pretraining): an audio and a pose encoder whose
embeddings of the same 3-second window agree.

Both encoders are the same pre-LN transformer over one window of per-video-frame features:

  tokens = Dense(features) + position embedding       # [B, L, D]
  tokens = N x TransformerBlock(tokens)               # motion_dit's block
  embedding = normalise(Dense(mean_t LN(tokens)))     # [B, E], unit length

The pose encoder reads the 6 pose values per frame of `vasa_jax.evaluators.capp.pose_features`
(yaw, pitch, roll, translation and distance, centred per window); VASA-1 uses a 6-layer
transformer. The audio encoder reads per-frame speech features (log-mel, or Wav2Vec2 hidden
states, `vasa_jax.data.speech_features`) centred per window. A learned temperature scales the
cosine logits of the CLIP loss (`vasa_jax.trainers.capp`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vasa_jax.models import motion_dit

Dtype = Any
# Pose values per frame: yaw, pitch, roll, x, y, distance.
POSE_DIM = 6
# CLIP's initial temperature: logits = exp(log_scale) * cosine, log_scale = log(1 / 0.07).
INITIAL_LOG_SCALE = math.log(1 / 0.07)
# CLIP caps the logit scale at 100.
MAX_LOG_SCALE = math.log(100.0)


class SequenceEncoder(nn.Module):
  """[B, L, F] per-frame features -> [B, output_dim] unit-length embeddings."""
  length: int  # L: frames per window
  num_layers: int  # transformer blocks
  embed_dim: int  # token width D
  num_heads: int  # attention heads
  mlp_dim: int  # hidden units of each block's MLP
  output_dim: int  # E: embedding size
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    if features.shape[1] != self.length:
      raise ValueError(f"CAPP encoder windows hold {self.length} frames, got {features.shape}")
    tokens = motion_dit._dense(  # pylint: disable=protected-access
        self.embed_dim, (None, "embed"), self.dtype, self.param_dtype, "input")(
            features.astype(self.dtype))  # [B, L, D]
    position = self.param(
        "position", nn.with_logical_partitioning(
            nn.initializers.normal(motion_dit.EMBEDDING_INIT_STD), (None, "embed")),
        (self.length, self.embed_dim), self.param_dtype)  # [L, D]
    tokens = tokens + position.astype(self.dtype)[None]
    for layer in range(self.num_layers):
      tokens, _ = motion_dit.TransformerBlock(
          self.num_heads, self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"block_{layer}")(tokens)
    pooled = motion_dit.layer_norm(tokens, jnp.float32, self.param_dtype, "output_norm").mean(1)
    embedding = motion_dit._dense(  # pylint: disable=protected-access
        self.output_dim, ("embed", None), jnp.float32, self.param_dtype, "output")(pooled)
    return embedding / jnp.linalg.norm(embedding, axis=-1, keepdims=True).clip(1e-6)  # [B, E]


class CAPP(nn.Module):
  """The audio and pose encoders and the CLIP temperature; build it with `from_config`."""
  window: int  # L: frames per window (3 s)
  audio_dim: int  # per-frame speech feature size
  pose_layers: int = 6
  audio_layers: int = 6
  embed_dim: int = 256
  num_heads: int = 4
  mlp_dim: int = 1024
  output_dim: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict, audio_dim: int) -> "CAPP":
    """The model `config.model` of configs/capp.py describes, for `audio_dim` features."""
    return cls(window=model_config.window, audio_dim=audio_dim,
               pose_layers=model_config.pose_layers, audio_layers=model_config.audio_layers,
               embed_dim=model_config.embed_dim, num_heads=model_config.num_heads,
               mlp_dim=model_config.mlp_dim, output_dim=model_config.output_dim)

  def setup(self):
    def encoder(num_layers):
      return SequenceEncoder(self.window, num_layers, self.embed_dim, self.num_heads,
                             self.mlp_dim, self.output_dim, self.dtype, self.param_dtype)
    self.pose_encoder = encoder(self.pose_layers)
    self.audio_encoder = encoder(self.audio_layers)
    self.log_scale = self.param("log_scale", nn.initializers.constant(INITIAL_LOG_SCALE), (),
                                jnp.float32)

  def encode_pose(self, pose: jax.Array) -> jax.Array:  # [B, L, 6] -> [B, E]
    return self.pose_encoder(pose)

  def encode_audio(self, audio: jax.Array) -> jax.Array:  # [B, L, A] -> [B, E]
    return self.audio_encoder(audio)

  def logit_scale(self) -> jax.Array:  # [] exp(log_scale), at most 100
    return jnp.exp(jnp.minimum(self.log_scale, MAX_LOG_SCALE))

  def __call__(self, audio: jax.Array, pose: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(audio embeddings [B, E], pose embeddings [B, E], logit scale [])."""
    return self.encode_audio(audio), self.encode_pose(pose), self.logit_scale()

  def example_inputs(self, batch_size: int = 1) -> tuple[jax.ShapeDtypeStruct, ...]:
    return (jax.ShapeDtypeStruct((batch_size, self.window, self.audio_dim), jnp.float32),
            jax.ShapeDtypeStruct((batch_size, self.window, POSE_DIM), jnp.float32))
