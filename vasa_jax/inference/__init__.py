"""Inference: the motion sampler, the talking-head renderer and streaming."""
