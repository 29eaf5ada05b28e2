"""cdt: masked diffusion language models with a learned token critic."""

__version__ = "0.1.0"
