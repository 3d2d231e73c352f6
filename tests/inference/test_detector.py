"""AutoencoderDetector on the real pump model: batched streams, missing data, per-stream adaptation."""

from __future__ import annotations

import copy
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.detectors.base import Detector, ScoreBlock, StreamingDetector, WindowBlock, shares
from agent.errors import ConfigError, ModelError
from agent.inference import load_model
from agent.inference.card import ModelCard
from agent.inference.detector import ERROR_BLOCK_VALUES, AutoencoderDetector

ADAPT = 120


def _series(card: ModelCard, n_streams: int, rows: int, seed: int) -> np.ndarray:
    """Per-stream operating points (offset means) with noise; stream i gets a 6-sigma step on channel
    i % 8 from row 200 on."""
    rng = np.random.default_rng(seed)
    mean, scale = np.asarray(card.mean), np.asarray(card.scale)
    offsets = rng.normal(0, 2, (n_streams, 1, 8)) * scale
    x = mean + offsets + 0.5 * scale * rng.standard_normal((n_streams, rows, 8))
    for i in range(n_streams):
        x[i, 200:, i % 8] += 6 * scale[i % 8]
    return x


def _run(detector: AutoencoderDetector, series: np.ndarray, slots: np.ndarray) -> list[ScoreBlock]:
    w = detector.window
    out = []
    for t in range(w - 1, series.shape[1]):
        block = WindowBlock(series[:, t - w + 1 : t + 1], slots, np.full(len(slots), float(t)), hop=1)
        out.append(detector.score(block))
    return out


@pytest.fixture
def detector(pump_dir: Path) -> AutoencoderDetector:
    return AutoencoderDetector(
        "pump",
        load_model(pump_dir, backend="onnx"),
        hop=1,
        adapt_rows=ADAPT,
        smooth_rows=5,
        threshold_margin=3.0,
    )


def test_is_a_detector(detector: AutoencoderDetector) -> None:
    assert isinstance(detector, Detector)
    assert detector.window == detector.model.card.window


def test_streams_batched_together_score_as_if_alone(
    detector: AutoencoderDetector, pump_card: ModelCard, pump_dir: Path
) -> None:
    series = _series(pump_card, 5, 260, seed=1)
    calls: list[int] = []
    run = detector.model.backend.run

    def counting_run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return run(batch)

    detector.model.backend.run = counting_run  # type: ignore[method-assign]
    together = _run(detector, series, np.arange(5))
    scoring_calls = [n for n in calls if n == 5]
    assert len(scoring_calls) == 260 - ADAPT + 1  # one call per hop for all five streams, from row ADAPT-1
    for i in range(5):
        alone = AutoencoderDetector(
            "pump",
            load_model(pump_dir, backend="onnx"),
            hop=1,
            adapt_rows=ADAPT,
            smooth_rows=5,
            threshold_margin=3.0,
        )
        single = _run(alone, series[i : i + 1], np.array([7]))  # another slot number: state is per slot
        np.testing.assert_allclose([b.scores[i] for b in together], [b.scores[0] for b in single], rtol=1e-5)
        np.testing.assert_allclose(together[-1].thresholds[i], single[-1].thresholds[0], rtol=1e-6)


def test_adaptation_then_detection(detector: AutoencoderDetector, pump_card: ModelCard) -> None:
    series = _series(pump_card, 8, 300, seed=2)
    blocks = _run(detector, series, np.arange(8))
    t0 = detector.window - 1
    scores = np.array([b.scores for b in blocks])  # (time, stream)
    assert np.isnan(scores[: ADAPT - t0 - 1]).all()  # no verdict while a stream adapts
    thresholds = blocks[-1].thresholds
    assert (thresholds > 0).all() and len(set(np.round(thresholds, 9))) == 8  # one threshold per stream
    normal = scores[ADAPT + 5 - t0 : 200 - t0]
    step = scores[200 + 10 - t0 :]
    assert (normal > thresholds).mean() < 0.05
    assert (step > thresholds).mean() > 0.95
    # the alarm explanation points at the stepped channel
    last = blocks[-1]
    np.testing.assert_allclose(last.contributions.sum(axis=1), 1.0)
    assert (last.contributions.argmax(axis=1) == np.arange(8)).sum() >= 6
    np.testing.assert_allclose(last.baseline, series[:, :ADAPT].mean(axis=1), rtol=1e-9)


def test_missing_samples_give_no_verdict(pump_dir: Path, pump_card: ModelCard) -> None:
    detector = AutoencoderDetector("pump", load_model(pump_dir, backend="tflite"))
    x = np.tile(np.asarray(pump_card.mean), (3, pump_card.window, 1))
    x[1, 4, 2] = np.nan
    result = detector.score(WindowBlock(x, np.arange(3), np.zeros(3), hop=1))
    assert np.isnan(result.scores[1]) and np.isfinite(result.scores[[0, 2]]).all()
    assert (result.contributions[1] == 0).all()
    assert not result.exceeded[1]


def test_adapted_state_survives_a_restart(
    detector: AutoencoderDetector, pump_card: ModelCard, pump_dir: Path
) -> None:
    series = _series(pump_card, 3, ADAPT + 20, seed=3)
    before = _run(detector, series, np.arange(3))[-1]
    state: dict[str, Any] = detector.state()
    fresh = AutoencoderDetector(
        "pump", load_model(pump_dir, backend="onnx"), hop=1, adapt_rows=ADAPT, threshold_margin=3.0
    )
    fresh.load_state(state)
    w = pump_card.window
    block = WindowBlock(series[:, -w:], np.arange(3), np.zeros(3), hop=1)
    after = fresh.score(block)
    np.testing.assert_allclose(after.thresholds, before.thresholds)
    assert np.isfinite(after.scores).all()  # no second adaptation period after a restart


def test_from_params_checks_config(pump_dir: Path, pump_card: ModelCard) -> None:
    base = pump_dir.parent
    made = AutoencoderDetector.from_params(
        "pump", pump_card.channels, {"model": "pump", "adapt_rows": 400}, base
    )
    assert made.adapt_rows == 400 and made.model.artifact_key == "onnx_int8"
    with pytest.raises(ConfigError, match=r"detectors\.pump\.params\.model"):
        AutoencoderDetector.from_params("pump", pump_card.channels, {}, base)
    with pytest.raises(ConfigError, match=r"detectors\.pump\.params\.backend: must be one of"):
        AutoencoderDetector.from_params(
            "pump", pump_card.channels, {"model": "pump", "backend": "cuda"}, base
        )
    with pytest.raises(ModelError, match="model pump: model expects channels"):
        AutoencoderDetector.from_params("pump", ("hr", "spo2"), {"model": "pump"}, base)


def test_from_config_for_the_registry(pump_dir: Path, pump_card: ModelCard) -> None:
    from agent.config.schema import DetectorConfig

    config = DetectorConfig(
        id="pump_ae",
        type="autoencoder",
        stream="equipment",
        channels=pump_card.channels,
        params={"model": str(pump_dir), "backend": "tflite", "precision": "fp32", "hop_s": 5.0},
    )
    detector = AutoencoderDetector.from_config(config, rate_hz=1.0)
    assert detector.hop == 5 and detector.model.artifact_key == "tflite_fp32"
    bad = DetectorConfig(
        id="pump_ae",
        type="autoencoder",
        stream="equipment",
        channels=pump_card.channels,
        params={"model": str(pump_dir), "hop_s": -1},
    )
    with pytest.raises(ConfigError, match=r"detectors\.pump_ae\.params\.hop_s"):
        AutoencoderDetector.from_config(bad, rate_hz=1.0)


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_calibration_reaches_the_target_rate(pump_dir: Path, pump_card: ModelCard, backend: str) -> None:
    """Tolerance: on fresh normal data the exceedance rate is within a factor of 2 of the target."""
    detector = AutoencoderDetector("pump", load_model(pump_dir, backend=backend))  # type: ignore[arg-type]
    mean, scale = np.asarray(pump_card.mean), np.asarray(pump_card.scale)
    rng = np.random.default_rng(4)

    def normal(n: int) -> np.ndarray:
        return mean + 0.5 * scale * rng.standard_normal((2, n, 8))

    target_per_hour = 60.0  # one per minute at a hop of 1 s: p = 1/60 per hop
    detector.calibrate(WindowBlock(normal(3000), np.arange(2), np.zeros(2), hop=1), target_per_hour, 1.0)
    blocks = _run(detector, normal(3000), np.arange(2))
    rate = np.mean([b.exceeded for b in blocks]) * 3600
    assert target_per_hour / 2 <= rate <= target_per_hour * 2
    assert detector.model.backend is not None  # the scratch replay shared, not copied, the runtime


def test_recalibration_applies_to_streams_already_seen(pump_dir: Path, pump_card: ModelCard) -> None:
    detector = AutoencoderDetector("pump", load_model(pump_dir))
    x = np.tile(np.asarray(pump_card.mean), (2, pump_card.window, 1))
    block = WindowBlock(x, np.arange(2), np.zeros(2), hop=1)
    assert (detector.score(block).thresholds == pump_card.threshold).all()
    detector.load_state({"type": "autoencoder", "id": "pump", "threshold": 0.5, "streams": {}})
    assert (detector.score(block).thresholds == 0.5).all()


def test_adaptation_too_short_for_the_smoothing_is_a_config_error(pump_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"detectors\.pump\.params\.adapt_rows: 50 rows give 41 windows"):
        AutoencoderDetector("pump", load_model(pump_dir), adapt_rows=50, smooth_rows=30)


def test_causal_future_data_never_changes_past_scores(pump_dir: Path, pump_card: ModelCard) -> None:
    series = _series(pump_card, 3, 260, seed=5)

    def scores(rows: int) -> np.ndarray:
        d = AutoencoderDetector("pump", load_model(pump_dir), hop=1, adapt_rows=ADAPT, smooth_rows=5)
        return np.array([b.scores for b in _run(d, series[:, :rows], np.arange(3))])

    short, long = scores(180), scores(260)
    np.testing.assert_array_equal(long[: len(short)], short)


# -- per-stream subspace removal (pca_fraction) ------------------------------------------------------------


def _pca_detector(residual_dir: Path, **kw: Any) -> AutoencoderDetector:
    """The shipped residual model; its card sets pca_fraction 0.5 (24 of 48 directions)."""
    return AutoencoderDetector(
        "pump", load_model(residual_dir, backend="onnx"), hop=1, adapt_rows=ADAPT, smooth_rows=5, **kw
    )


def test_pca_fraction_feeds_the_model_each_streams_residual(residual_dir: Path, pump_card: ModelCard) -> None:
    detector = _pca_detector(residual_dir)
    seen: list[np.ndarray] = []
    run = detector.model.backend.run

    def capturing_run(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return run(batch)

    detector.model.backend.run = capturing_run  # type: ignore[method-assign]
    series = _series(pump_card, 2, ADAPT + 5, seed=6)
    _run(detector, series, np.arange(2))
    adaptation = [b for b in seen if len(b) == ADAPT - detector.window + 1]  # stream 0's, then stream 1's
    assert len(adaptation) == 2 and detector.components == 24  # from the card, not from a param
    for slot, fed in enumerate(adaptation):
        flat = fed.reshape(len(fed), -1).astype(np.float64)
        basis = detector._basis[slot]
        np.testing.assert_allclose(flat @ basis, 0.0, atol=1e-4)  # nothing left along the stream's subspace
        z = (series[slot, :ADAPT] - detector._mean[slot]) / detector._scale[slot]
        windows = np.lib.stride_tricks.sliding_window_view(z, detector.window, axis=0).transpose(0, 2, 1)
        # the subspace holds at least half of the adaptation windows' energy (it keeps half the directions)
        assert (flat**2).sum() < 0.5 * (windows**2).sum()


def test_pca_fraction_streams_batched_together_score_as_if_alone(
    residual_dir: Path, pump_card: ModelCard
) -> None:
    series = _series(pump_card, 3, 200 + 60, seed=7)
    together = _run(_pca_detector(residual_dir), series, np.arange(3))
    for i in range(3):
        alone = _run(_pca_detector(residual_dir), series[i : i + 1], np.array([4]))
        np.testing.assert_allclose([b.scores[i] for b in together], [b.scores[0] for b in alone], rtol=1e-5)
    scores = np.array([b.scores for b in together])
    assert np.isfinite(scores[-50:]).all() and (scores[-50:] > together[-1].thresholds).mean() > 0.5  # step


def test_pca_fraction_state_round_trips_and_copies(residual_dir: Path, pump_card: ModelCard) -> None:
    series = _series(pump_card, 2, ADAPT + 30, seed=8)
    detector = _pca_detector(residual_dir, threshold_margin=3.0)
    _run(detector, series[:, : ADAPT + 10], np.arange(2))
    clone = copy.deepcopy(detector)
    clone._basis[:] = 0.0
    assert np.abs(detector._basis).sum() > 0  # the copy's state is its own
    state: dict[str, Any] = json.loads(json.dumps(detector.state()))  # as the state file stores it
    fresh = _pca_detector(residual_dir, threshold_margin=3.0)
    fresh.load_state(state)
    np.testing.assert_allclose(fresh._basis, detector._basis)
    w = detector.window
    for t in range(ADAPT + 10, ADAPT + 30):
        block = WindowBlock(series[:, t - w + 1 : t + 1], np.arange(2), np.zeros(2), hop=1)
        a, b = detector.score(block), fresh.score(block)
        np.testing.assert_allclose(b.thresholds, a.thresholds)
        # smoothing restarts after a restart; the raw scores (5 rows on) are the same
        if t >= ADAPT + 14:
            np.testing.assert_allclose(b.scores, a.scores, rtol=1e-6)
    state["streams"]["0"]["basis"] = [[0.0]]
    with pytest.raises(ConfigError, match=r"state\.detectors\.pump\.streams\.0\.basis"):
        _pca_detector(residual_dir).load_state(state)


def test_pca_fraction_comes_from_the_card_and_errors_name_the_key(
    pump_dir: Path, residual_dir: Path, pump_card: ModelCard
) -> None:
    from agent.config.schema import DetectorConfig

    def config(model: Path, **params: Any) -> DetectorConfig:
        return DetectorConfig(
            id="pump_ae",
            type="autoencoder",
            stream="equipment",
            channels=pump_card.channels,
            params={"model": str(model), **params},
        )

    assert AutoencoderDetector.from_config(config(residual_dir, adapt_rows=400), rate_hz=1.0).components == 24
    stated = AutoencoderDetector.from_config(config(residual_dir, adapt_rows=400, pca_fraction=0.5), 1.0)
    assert stated.components == 24
    assert AutoencoderDetector.from_config(config(pump_dir, adapt_rows=400), rate_hz=1.0).components == 0
    # a value other than the card's would feed the model inputs unlike its training data
    for model, params in (
        (residual_dir, {"adapt_rows": 400, "pca_fraction": 0.25}),
        (residual_dir, {"adapt_rows": 400, "pca_fraction": 0}),
        (pump_dir, {"adapt_rows": 400, "pca_fraction": 0.5}),
    ):
        with pytest.raises(ConfigError, match=r"detectors\.pump_ae\.params\.pca_fraction: model pump"):
            AutoencoderDetector.from_config(config(model, **params), rate_hz=1.0)
    with pytest.raises(ConfigError, match=r"detectors\.pump_ae\.params\.pca_fraction: keeps 24 of 48"):
        AutoencoderDetector.from_config(config(residual_dir), rate_hz=1.0)  # no adapt_rows: no subspace
    with pytest.raises(ConfigError, match=r"detectors\.pump_ae\.params\.adapt_rows: 40 rows give 35"):
        AutoencoderDetector.from_config(config(residual_dir, adapt_rows=40), rate_hz=1.0)


def _framed_blocks(
    card: ModelCard, hop: int, frame: int, streams: int, frames: int, seed: int
) -> list[WindowBlock]:
    """Frames of `frame` samples per stream, as the pipeline hands them over: the window plus the
    frame's samples beyond one hop. Stream 1 loses a sample now and then, stream 2 a long stretch, and
    for a few frames every stream but stream 0 is NaN (one window to score in some hops)."""
    rng = np.random.default_rng(seed)
    mean, scale = np.asarray(card.mean), np.asarray(card.scale)
    length = card.window + frame * frames
    series = mean + scale * rng.standard_normal((streams, length, len(card.channels)))
    series[1, rng.random(length) < 0.01] = np.nan
    series[2, length // 3 : length // 2] = np.nan
    lone = card.window + frame * (frames - 3)
    series[1:, lone : lone + frame + card.window // 2] = np.nan
    slots = np.arange(streams, dtype=np.int64) * 3
    span = card.window + frame - hop
    return [
        WindowBlock(series[:, end - span : end], slots, np.full(streams, float(end)), frame)
        for end in range(card.window + frame, length + 1, frame)
    ]


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize(
    ("model", "hop", "frame"),
    [("ecg-beat", 8, 73), ("ecg-beat", 8, 16), ("ecg-beat", 8, 300), ("ecg-window", 8, 73), ("pump", 1, 5)],
)
def test_a_frame_is_scored_exactly_as_hop_by_hop(model: str, hop: int, frame: int, backend: Any) -> None:
    """A frame of several hops (a Polar H10's 73 ECG samples are 9 hops of 8 and one more), normalised
    once for all its hops, gives every field of the verdict the hop-by-hop path gives, bit for bit, from
    the same backend batches."""
    loaded = load_model(Path(__file__).resolve().parents[2] / "models" / model, backend=backend)
    detector = AutoencoderDetector("ae", loaded, hop=hop)
    batches: list[np.ndarray] = []
    run = loaded.backend.run
    loaded.backend.run = lambda batch: batches.append(batch.copy()) or run(batch)  # type: ignore[method-assign]
    blocks = _framed_blocks(loaded.card, hop, frame, streams=7, frames=40, seed=frame)
    got = [detector.score(block) for block in blocks]
    framed, batches[:] = list(batches), []
    want = [StreamingDetector.score(detector, block) for block in blocks]  # the base class: hop by hop
    for a, b in zip(got, want, strict=True):
        for field in ("scores", "thresholds", "contributions", "observed", "limits", "baseline"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert len(framed) == len(batches)
    for x, y in zip(framed, batches, strict=True):
        np.testing.assert_array_equal(x, y)
    assert 1 in map(len, batches)  # hops with a single window to score were among them
    assert np.isfinite(np.concatenate([g.scores for g in got])).mean() > 0.5


def test_one_glitch_sample_while_adapting_does_not_blind_the_stream(
    detector: AutoencoderDetector, pump_card: ModelCard, pump_dir: Path
) -> None:
    # Equipment review F2 (as for window_pca): a 65535 error word among the adaptation rows set the
    # stream's learnt scale by a plain std, hiding the 6-sigma step from row 200.
    series = _series(pump_card, 1, 300, seed=2)
    glitched = series.copy()
    glitched[0, 50, 0] = 65535.0
    clean_blocks = _run(detector, series, np.arange(1))
    fresh = AutoencoderDetector(
        "pump",
        load_model(pump_dir, backend="onnx"),
        hop=1,
        adapt_rows=ADAPT,
        smooth_rows=5,
        threshold_margin=3.0,
    )
    blocks = _run(fresh, glitched, np.arange(1))
    np.testing.assert_allclose(
        fresh.state()["streams"]["0"]["scale"], detector.state()["streams"]["0"]["scale"], rtol=0.1
    )
    assert blocks[-1].thresholds[0] == pytest.approx(clean_blocks[-1].thresholds[0], rel=0.2)
    t0 = detector.window - 1
    step = np.array([b.scores[0] for b in blocks[200 + 10 - t0 :]])
    assert (step > blocks[-1].thresholds[0]).mean() > 0.95


def test_learning_progress_counts_adaptation_rows_until_the_first_verdict(
    detector: AutoencoderDetector, pump_card: ModelCard, pump_dir: Path
) -> None:
    """What `edge-agent status` shows as "learning N of M s": rows adapted per stream, until it judges."""
    series = _series(pump_card, 2, ADAPT + 20, seed=4)
    slots = np.array([0, 1])
    assert detector.learning(slots)[0].tolist() == [0, 0]  # never fed
    _run(detector, series[:, : ADAPT - 10], slots)
    assert detector.learning(slots)[0].tolist() == [ADAPT - 10] * 2
    assert detector.learning(slots)[1] == ADAPT
    blocks = _run(detector, series, slots)
    assert detector.learning(slots)[0].tolist() == [ADAPT] * 2 and np.isfinite(blocks[-1].scores).all()
    unadapted = AutoencoderDetector("pump", load_model(pump_dir, backend="onnx"))
    assert unadapted.learning(slots)[1] == 0  # the card's threshold judges from the first window


@pytest.mark.parametrize("blocks", [False, True])
@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("model", ["pump", "ecg-window"])
def test_scores_are_bit_for_bit_the_plain_float64_arithmetic(model: str, backend: str, blocks: bool) -> None:
    """The scoring path's fewer passes (float32 written by the division, a zero mean not subtracted, the
    error cast, differenced, squared and summed `ERROR_BLOCK_VALUES` at a time) give exactly what the plain
    formula gives: ((x - mean) / scale) cast to float32, then the mean over the window of the float64
    squared error. Streams with the card's mean (zero for ecg-window) and with an adapted, non-zero one;
    -0.0 and NaN samples among them; batches within one error block, and (`blocks`) across two and a
    part of a third."""
    loaded = load_model(Path(__file__).resolve().parents[2] / "models" / model, backend=backend)  # type: ignore[arg-type]
    detector = AutoencoderDetector("ae", loaded)
    card = loaded.card
    rng = np.random.default_rng(7)
    w, c = card.window, len(card.channels)
    n = 2 * (ERROR_BLOCK_VALUES // (w * c)) + 3 if blocks else 6
    windows = np.asarray(card.mean) + np.asarray(card.scale) * rng.standard_normal((n, w, c))
    windows[1, 3, 0] = -0.0
    windows[2, 5, 0] = np.nan
    slots = np.arange(n)
    detector._grow(n)
    detector._mean[4] = detector._mean[4] + 0.3 * np.asarray(card.scale)  # as adapted streams have
    detector._scale[5] = detector._scale[5] * 1.7
    for rows in (slots, slots[:2], slots[3:]):  # only the card's mean and scale, and mixed with adapted ones
        scores, contributions = detector._model_scores(windows[rows], rows)
        z = (windows[rows] - detector._mean[rows, None, :]) / detector._scale[rows, None, :]
        x = z.astype(np.float32)
        err = (loaded.backend.run(x).astype(np.float64) - x.astype(np.float64)) ** 2
        want = err.mean(axis=1) / c
        assert contributions.tobytes() == want.tobytes()
        assert scores.tobytes() == want.sum(axis=1).tobytes()
    # A hop with a window holding NaN: the others' scores are the formula's, the NaN window has none
    got = detector.score_hop(WindowBlock(windows, slots, np.zeros(n), card.hop))
    clean = np.flatnonzero(~np.isnan(windows).any(axis=(1, 2)))
    z = (windows[clean] - detector._mean[clean, None, :]) / detector._scale[clean, None, :]
    x = z.astype(np.float32)
    want = ((loaded.backend.run(x).astype(np.float64) - x.astype(np.float64)) ** 2).mean(axis=1) / c
    assert clean.size == n - 1 and np.isnan(got.scores[2])
    assert got.scores[clean].tobytes() == want.sum(axis=1).tobytes()
    assert got.contributions[clean].tobytes() == shares(want).tobytes()


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_the_error_is_taken_in_cache_sized_blocks(backend: str) -> None:
    """The float64 error of a batch is not held whole (400 ecg-window windows: 1.6 MB, out of a core's
    cache): beyond what the runtime's own call peaks at, scoring holds less than two error blocks."""
    loaded = load_model(Path(__file__).resolve().parents[2] / "models" / "ecg-window", backend=backend)  # type: ignore[arg-type]
    detector = AutoencoderDetector("ae", loaded)
    card = loaded.card
    x = np.random.default_rng(3).standard_normal((400, card.window, len(card.channels))).astype(np.float32)

    def peak(call: Any) -> int:
        tracemalloc.start()
        try:
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    detector._reconstruction_scores(x)  # the runtime sized for this batch before either is measured
    bare = peak(lambda: loaded.backend.run(x))
    scoring = peak(lambda: detector._reconstruction_scores(x))
    assert x.nbytes * 2 > 2 * 8 * ERROR_BLOCK_VALUES  # the whole error would not pass
    assert scoring - bare < 2 * 8 * ERROR_BLOCK_VALUES
