"""Shared fixtures: the shipped models (real files, real runtimes) and writable copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.inference.card import ModelCard, load_card

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="session")
def pump_dir() -> Path:
    return MODELS / "pump"


@pytest.fixture(scope="session")
def pump_card(pump_dir: Path) -> ModelCard:
    return load_card(pump_dir)


@pytest.fixture(scope="session")
def residual_dir() -> Path:
    """models/pump-residual: trained on each stream's window residual (card preprocessing.pca_fraction)."""
    return MODELS / "pump-residual"


@pytest.fixture
def pump_copy(tmp_path: Path, pump_dir: Path) -> Path:
    """A writable copy of models/pump for tests that alter or sign files."""
    return Path(shutil.copytree(pump_dir, tmp_path / "pump"))
