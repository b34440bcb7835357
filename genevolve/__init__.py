"""GenEvolve: an image-generation agent that thinks before it draws.

Importing this package is cheap: torch, transformers, diffusers and gradio load only inside
the backends that need them.
"""

__version__ = "0.1.0"
