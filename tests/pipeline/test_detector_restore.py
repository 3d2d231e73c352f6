"""Restoring saved detector state per detector, on the real Pipeline with the shipped pump model.

Audit audml, finding 1: after a changed margin or a new model (the detector's config digest differs) each
stream's adapted mean, scale and threshold (window_pca: and its subspace) were restored unchanged, so the
change never took effect. Finding 2: one detector whose saved state did not fit (its channels changed)
raised out of `Pipeline.load_state`, and the daemon set the whole file aside: every other detector's
state and every open alarm episode with it.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import AgentConfig, parse_config
from agent.events import Phase
from agent.inference.card import load_card
from agent.pipeline import Pipeline
from agent.readings import Reading

MODELS = Path(__file__).resolve().parents[2] / "models"
PUMP = load_card(MODELS / "pump")
ROWS = 260  # at 1 Hz: past every detector's 120 adaptation rows, with scored windows after them


def config(
    tmp_path: Path,
    *,
    ae_margin: float = 3.0,
    pca_margin: float = 2.5,
    ae_channels: int = 8,
    model: Path | None = None,
) -> AgentConfig:
    ae: dict[str, Any] = {
        "id": "pump_ae",
        "type": "autoencoder",
        "stream": "pump",
        "channels": list(PUMP.channels),
        "params": {
            "model": str(model or MODELS / "pump"),
            "adapt_rows": 120,
            "smooth_rows": 5,
            "threshold_quantile": 0.95,
            "threshold_margin": ae_margin,
            "min_scale_fraction": 0.5,
        },
    }
    if model is None:
        ae["params"]["public_key"] = str(MODELS / "edge-agent-models.pub")
    if ae_channels != 8:  # the same id, now a model-free detector on fewer channels
        ae = {
            "id": "pump_ae",
            "type": "window_pca",
            "stream": "pump",
            "channels": list(PUMP.channels[:ae_channels]),
            "params": {"adapt_rows": 120, "smooth_rows": 5},
        }
    raw = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "pump-a", "kind": "equipment", "transport": "simulator"}],
        "detectors": [
            ae,
            {
                "id": "pump_pca",
                "type": "window_pca",
                "stream": "pump",
                "channels": list(PUMP.channels),
                "params": {"adapt_rows": 120, "smooth_rows": 5, "threshold_margin": pca_margin},
            },
            {
                "id": "hot",
                "type": "limit",
                "stream": "pump",
                "channels": ["Temperature"],
                "params": {"above": 1000.0},
            },
        ],
        "alarms": [
            {"condition": "ae_anomaly", "detector": "pump_ae", "min_duration_s": 0},
            {"condition": "pca_anomaly", "detector": "pump_pca", "min_duration_s": 0},
            {"condition": "overheat", "detector": "hot", "min_duration_s": 0, "clear_after_s": 5},
        ],
    }
    return parse_config(raw, base_dir=tmp_path)


def readings(rows: int = ROWS, *, hot: bool = False, seed: int = 3, start: float = 1e6) -> list[Reading]:
    """One pump's 1 Hz samples near the card's operating point; `hot`: Temperature above the limit."""
    rng = np.random.default_rng(seed)
    mean, scale = np.asarray(PUMP.mean), np.asarray(PUMP.scale)
    values = mean + 0.5 * scale * rng.standard_normal((rows, len(mean)))
    if hot:
        values[:, PUMP.channels.index("Temperature")] = 2000.0
    return [
        Reading("pump-a/pump", PUMP.channels, values[t : t + 1], start + t, start + t, 1.0)
        for t in range(rows)
    ]


def pipeline(cfg: AgentConfig) -> Pipeline:
    return Pipeline(cfg, lambda device, prefix="d": f"{prefix}-{device}")


def stream_thresholds(p: Pipeline, detector: str) -> dict[str, float]:
    return {slot: s["threshold"] for slot, s in p.detector_state()[detector]["streams"].items()}


def test_a_changed_margin_drops_each_streams_adaptation_so_it_takes_effect(tmp_path: Path) -> None:
    before = pipeline(config(tmp_path))
    before.ingest(readings())
    saved = copy.deepcopy(before.detector_state())
    adapted = stream_thresholds(before, "pump_ae")["0"]
    adapted_pca = stream_thresholds(before, "pump_pca")["0"]

    same = pipeline(config(tmp_path))  # unchanged: every stream keeps its adaptation
    same.load_state(copy.deepcopy(saved), {})
    assert stream_thresholds(same, "pump_ae") == {"0": adapted}
    assert stream_thresholds(same, "pump_pca") == {"0": adapted_pca}

    changed = pipeline(config(tmp_path, ae_margin=6.0, pca_margin=5.0))
    changed.load_state(copy.deepcopy(saved), {})
    assert stream_thresholds(changed, "pump_ae") == {}  # adapts again, under the new margin
    assert stream_thresholds(changed, "pump_pca") == {}  # and so does the subspace
    changed.ingest(readings())
    assert stream_thresholds(changed, "pump_ae")["0"] == pytest.approx(2 * adapted, rel=1e-9)
    assert stream_thresholds(changed, "pump_pca")["0"] == pytest.approx(2 * adapted_pca, rel=1e-9)


def test_a_new_model_version_activated_drops_each_streams_adaptation(tmp_path: Path) -> None:
    """A managed store's `current` link moved to another version (what models/activate does before its
    reload): the same config, another model version in the digest."""
    store = tmp_path / "models" / "pump"
    for version in ("1.0.0", "1.1.0"):
        folder = Path(shutil.copytree(MODELS / "pump", store / version))
        card = json.loads((folder / "card.json").read_text())
        (folder / "card.json").write_text(json.dumps(card | {"version": version}))
        (folder / "signature.json").unlink()  # unsigned: this config names no public key
    current = store / "current"
    current.symlink_to("1.0.0")
    before = pipeline(config(tmp_path, model=current))
    before.ingest(readings())
    saved = before.detector_state()
    current.unlink()
    current.symlink_to("1.1.0")
    after = pipeline(config(tmp_path, model=current))
    assert after.models()["pump"].startswith("1.1.0 ")
    after.load_state(saved, {})
    assert stream_thresholds(after, "pump_ae") == {}  # adapts again under 1.1.0
    assert stream_thresholds(after, "pump_pca") == stream_thresholds(before, "pump_pca")  # unchanged


def test_a_detector_whose_channels_changed_starts_fresh_and_the_rest_is_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = pipeline(config(tmp_path))
    events = before.ingest(readings(hot=True))
    (episode,) = [e.id for e in events if e.condition == "overheat" and e.phase is Phase.START]
    saved, alarms = before.detector_state(), before.alarm_state()
    kept_pca = stream_thresholds(before, "pump_pca")

    after = pipeline(config(tmp_path, ae_channels=4))  # pump_ae: the same id on 4 channels
    after.load_state(saved, alarms)
    assert stream_thresholds(after, "pump_ae") == {}
    assert stream_thresholds(after, "pump_pca") == kept_pca
    assert "overheat" in [condition for condition, _ in after.unjudged_episodes("d-pump-a")]
    cooled = after.ingest(readings(20, seed=4, start=1e6 + ROWS))  # the episode goes on under its id and ends
    assert [(e.phase, e.id) for e in cooled if e.condition == "overheat"] == [(Phase.END, episode)]
    # The same detector with a hand-edited (unfitting) state and the same digest: only it starts fresh.
    digest_kept = pipeline(config(tmp_path))
    broken = digest_kept.detector_state() | {
        "pump_ae": saved["pump_ae"]
        | {"streams": {"0": {"mean": [0.0] * 4, "scale": [1.0] * 4, "threshold": 1}}}
    }
    broken["pump_pca"] = saved["pump_pca"]
    with caplog.at_level(logging.WARNING, logger="agent.pipeline.pipeline"):
        digest_kept.load_state(broken, alarms)
    assert stream_thresholds(digest_kept, "pump_ae") == {}
    assert stream_thresholds(digest_kept, "pump_pca") == kept_pca
    assert "overheat" in [condition for condition, _ in digest_kept.unjudged_episodes("d-pump-a")]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]  # not the INFO of `after` above
    (line,) = [r.getMessage() for r in warnings if "pump_ae" in r.getMessage()]
    assert "does not fit" in line and "state.detectors.pump_ae.streams.0.mean" in line
