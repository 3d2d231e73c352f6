"""Readings → quality gate → windows → detectors → alarm episodes."""

from agent.pipeline.pipeline import Pipeline, build_detectors

__all__ = ["Pipeline", "build_detectors"]
