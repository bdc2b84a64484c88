"""The Rollwise model server: Open Inference Protocol v2, strict inputs, rich rollout signals."""

__version__ = "0.1.0"
