"""The model families' adapters (models/family.py registers them): Stable Diffusion 1.x/2.x and XL (sd.py),
Stable Diffusion 3 and FLUX.1 (flow.py), on one base (base.py)."""
