"""Evaluators: measures of generated video (lip sync on the pixels, and the field's metrics)."""
