"""Pure diffusion functions of VASA-1's motion stage (no Flax state).

- `schedules`: noise schedules, the forward process `q_sample` and the X^0-prediction loss.
- `conditioning`: training-time condition dropout (the masks `MotionDiT` reads).
- `sampling`: DDPM and DDIM steps from a predicted X^0 and a `lax.scan` sampler.
- `guidance`: multi-condition classifier-free guidance in one batched network call.
- `normalization`: dataset mean/std normalisation of motion latents.
"""
