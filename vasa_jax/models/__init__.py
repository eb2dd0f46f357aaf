"""Flax (Linen) models of VASA-1: the face latent autoencoder and the motion diffusion transformer."""
