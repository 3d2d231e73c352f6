"""Streaming statistical detectors, vectorised over streams; see docs/detectors.md."""

from agent.detectors.base import Detector, ScoreBlock, StreamingDetector, WindowBlock
from agent.detectors.registry import TYPES, build_detector

__all__ = ["TYPES", "Detector", "ScoreBlock", "StreamingDetector", "WindowBlock", "build_detector"]
