"""Hugging Face ZeroGPU: GPU work is wrapped with ``spaces.GPU`` when that package is present (on a Space)."""

from __future__ import annotations


def gpu(fn):
    """Wrap GPU work for Hugging Face ZeroGPU when the ``spaces`` package is present."""
    try:
        import spaces  # type: ignore
    except ImportError:
        return fn
    return spaces.GPU(fn)
