"""Autoencoder inference on the gateway: model cards, signature checks, ONNX Runtime and LiteRT backends."""

from agent.inference.backend import (
    InferenceBackend,
    LoadedModel,
    available_backends,
    check_stream,
    load_backend,
    load_model,
    reconstruction_scores,
)
from agent.inference.card import ModelCard, load_card, parse_card

__all__ = [
    "InferenceBackend",
    "LoadedModel",
    "ModelCard",
    "available_backends",
    "check_stream",
    "load_backend",
    "load_card",
    "load_model",
    "parse_card",
    "reconstruction_scores",
]
