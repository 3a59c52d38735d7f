"""Training of the embedded tiny Stable Diffusion (`ptiedit toyworld train`); not needed to edit images.

Modules: models (the components and their export as a diffusers folder), loops (checkpoints, logs and the VAE and
UNet training loops every recipe shares), shapes (the shapes world's recipe), textured and textured_unet (the
textured world's recipe, which made the shipped model, and its fp16 snapshots), command (the subcommand).
"""
