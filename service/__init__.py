"""Cats-vs-dogs inference service: Starlette + onnxruntime, no torch."""

__version__ = "1.0.0"
