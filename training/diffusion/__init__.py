"""Angle-conditioned diffusion generators on diffusers (imports torch; never used by services/)."""
