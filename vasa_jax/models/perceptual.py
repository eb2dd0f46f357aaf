"""Perceptual, gaze and identity losses on frozen pretrained networks (VGG19, ArcFace IResNet,
MPIIGaze's LeNet).

MegaPortraits' perceptual losses are a VGG19 (ImageNet) term and a VGGFace term, beside a gaze
loss from a gaze-estimation network; VASA-1 adds a cross-identity loss, the cosine distance
between ArcFace embeddings. VGGFace weights are not available to this project, so the face term
uses the ArcFace IResNet's stage feature maps instead (`face_perceptual_loss`); MegaPortraits
does not name its gaze network, so the gaze term uses MPIIGaze's LeNet (`gaze_loss`,
`vasa_jax.models.gaze`).

All functions are pure and jit-friendly. The variables come from `vasa_jax.models.pretrained` (or a
module's `init`) and are not updated by training. `model` must be the module the variables belong
to; choose its `dtype` (bfloat16 on accelerators) there. Images are [B, H, W, 3] in [-1, 1]; the
networks apply their own input normalisation and, for ArcFace, resizing to 112x112. Losses are
float32 scalars, per-example values float32 [B].
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from vasa_jax.models import gaze
from vasa_jax.models import iresnet
from vasa_jax.models import vgg

_NORM_EPSILON = 1e-12


def _weighted_feature_l1(prediction_features: Sequence[jax.Array],
                         target_features: Sequence[jax.Array],
                         layer_weights: Optional[Sequence[float]]) -> jax.Array:
  """sum_l w_l * mean |prediction_l - target_l| (every w_l = 1 when `layer_weights` is None)."""
  if layer_weights is None:
    layer_weights = (1.0,) * len(prediction_features)
  if len(layer_weights) != len(prediction_features):
    raise ValueError(f"{len(layer_weights)} layer weights for {len(prediction_features)} "
                     "feature maps")
  return sum(
      weight * jnp.mean(jnp.abs(p.astype(jnp.float32) - t.astype(jnp.float32)))
      for weight, p, t in zip(layer_weights, prediction_features, target_features))


def _features_of_both(apply_fn, prediction: jax.Array, target: jax.Array):
  """Runs one network pass over [prediction; target] and splits each output back in two."""
  if prediction.shape != target.shape:
    raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
  batch = prediction.shape[0]
  outputs = apply_fn(jnp.concatenate([prediction, target], axis=0))
  return [o[:batch] for o in outputs], [o[batch:] for o in outputs]


def vgg_perceptual_loss(vgg_variables: Any, prediction: jax.Array, target: jax.Array,
                        layer_weights: Optional[Sequence[float]] = None,
                        model: vgg.VGG19 = vgg.VGG19()) -> jax.Array:
  """Weighted sum over `model.layers` of the mean L1 between VGG19 feature maps.

  Args:
    vgg_variables: the VGG19 variables ({"params": ...}).
    prediction: [B, H, W, 3] in [-1, 1].
    target: [B, H, W, 3] in [-1, 1]; gradients flow into both images (stop them in the caller
      when the target is data).
    layer_weights: one weight per entry of `model.layers`; None: all 1.
    model: the VGG19 module (its `layers` choose the feature maps).

  Returns:
    float32 scalar, 0 for identical images.
  """
  prediction_features, target_features = _features_of_both(
      lambda images: model.apply(vgg_variables, images), prediction, target)
  return _weighted_feature_l1(prediction_features, target_features, layer_weights)


def face_perceptual_loss(arcface_variables: Any, prediction: jax.Array, target: jax.Array,
                         layer_weights: Optional[Sequence[float]] = None,
                         model: iresnet.IResNet = iresnet.IResNet()) -> jax.Array:
  """Weighted sum of the mean L1 between the ArcFace stage feature maps (layer1..layer4).

  Stands in for MegaPortraits' VGGFace perceptual term. Arguments as `vgg_perceptual_loss`, with
  `layer_weights` holding one weight per IResNet stage (4).
  """
  prediction_features, target_features = _features_of_both(
      lambda images: model.apply(arcface_variables, images)[1], prediction, target)
  return _weighted_feature_l1(prediction_features, target_features, layer_weights)


def gaze_loss(gaze_variables: Any, prediction: jax.Array, target: jax.Array,
              eye_boxes: jax.Array, head_pose: jax.Array,
              model: gaze.GazeLeNet = gaze.GazeLeNet()) -> jax.Array:
  """MegaPortraits' gaze loss: the mean L1 between the gaze network's readings of the eyes of
  `prediction` and of `target`, summed over its feature maps (conv1, conv2, fc1) and its gaze
  output (pitch, yaw in radians).

  Args:
    gaze_variables: the `GazeLeNet` variables ({"params": ...}).
    prediction: [B, S, S, 3] in [-1, 1].
    target: [B, S, S, 3] in [-1, 1] (the driver frame; stop its gradient in the caller if needed).
    eye_boxes: [B, E, 4] boxes (y0, x0, y1, x1, pixels) of the target's eyes, the same for the
      prediction (`vasa_jax.data.input_pipeline.eye_boxes`).
    head_pose: [B, 2] the target's head (pitch, yaw) in radians, the network's second input.
    model: the gaze module the variables belong to.

  Returns:
    float32 scalar, 0 for identical images.
  """
  eyes = eye_boxes.shape[1]
  pose = jnp.repeat(head_pose.astype(jnp.float32), eyes, axis=0)  # [B * E, 2]

  def readings(images):
    gaze_angles, features = model.apply(gaze_variables, gaze.eye_patches(images, eye_boxes),
                                        pose)
    return features + [gaze_angles]
  return _weighted_feature_l1(readings(prediction), readings(target), None)


def identity_embedding(arcface_variables: Any, images: jax.Array,
                       model: iresnet.IResNet = iresnet.IResNet()) -> jax.Array:
  """L2-normalised ArcFace embeddings: images [B, H, W, 3] in [-1, 1] -> float32 [B, 512]."""
  embedding, _ = model.apply(arcface_variables, images)
  return _l2_normalise(embedding.astype(jnp.float32))


def identity_cosine_distance(embedding_a: jax.Array, embedding_b: jax.Array) -> jax.Array:
  """1 - cosine similarity of two embedding batches [B, D] -> float32 [B], in [0, 2]."""
  a = _l2_normalise(embedding_a.astype(jnp.float32))
  b = _l2_normalise(embedding_b.astype(jnp.float32))
  return 1.0 - jnp.sum(a * b, axis=-1)


def _l2_normalise(vectors: jax.Array) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(vectors), axis=-1, keepdims=True))
  return vectors / jnp.maximum(norm, _NORM_EPSILON)
