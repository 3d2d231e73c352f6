"""tools.evaluate: the NAB scoring rules on hand-worked cases, the metrics, and the pipeline replay."""

from __future__ import annotations

import json
import math
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from agent.config.loader import load_config
from tools.evaluate import nab_score
from tools.evaluate.datasets import SKAB_CHANNELS, T0, Series
from tools.evaluate.metrics import PointMetrics, event_metrics, roc_auc
from tools.evaluate.replay import replay

WINDOW = [(50, 59)]  # rows 50..59 of a 100-row series; rows 0..14 are probationary


def a(y: float) -> float:
    return 2 / (1 + math.exp(5 * y)) - 1


def detections(*rows: int, n: int = 100) -> np.ndarray:
    out = np.zeros(n)
    out[list(rows)] = 1.0
    return out


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ((), -1.0),  # missed window
        ((50,), 1.0),  # first row of the window: full tpWeight
        ((55,), a(-0.5) / a(-1.0)),  # halfway: less
        ((55, 50), 1.0),  # only the best detection of a window counts
        ((5,), -1.0),  # probationary rows are not scored (window still missed)
        ((30, 50), 1.0 - 0.11),  # before any window: full fpWeight
        ((50, 70), 1.0 + 0.11 * a(11 / 9)),  # after a window: softened by distance
    ],
)
def test_nab_rules_on_hand_worked_cases(rows: tuple[int, ...], expected: float) -> None:
    scored = nab_score.prepare(detections(*rows), WINDOW)
    assert nab_score.raw_score(scored, 0.5) == pytest.approx(expected, abs=1e-9)


def test_nab_normalisation_null_is_0_and_perfect_is_100() -> None:
    corpus = [nab_score.prepare(detections(), WINDOW), nab_score.prepare(detections(50), WINDOW)]
    assert nab_score.normalised(nab_score.corpus_score(corpus, 0.5), corpus) == pytest.approx(50.0)
    perfect = [nab_score.prepare(detections(50), WINDOW)] * 2
    assert nab_score.normalised(nab_score.corpus_score(perfect, 0.5), perfect) == pytest.approx(100.0)


def test_the_optimiser_finds_the_best_threshold_a_brute_force_sweep_finds() -> None:
    rng = np.random.default_rng(1)
    corpus = []
    for _ in range(4):
        scores = rng.random(300)
        scores[120:135] += rng.random(15) * 0.6
        corpus.append(nab_score.prepare(scores, [(120, 150)]))
    threshold, best = nab_score.optimise(corpus)
    candidates = np.unique(np.concatenate([c.scores for c in corpus]))
    brute = max(nab_score.corpus_score(corpus, t) for t in candidates)
    assert best == pytest.approx(brute)
    assert nab_score.corpus_score(corpus, threshold) == pytest.approx(best)


def test_roc_auc_equals_the_pairwise_definition() -> None:
    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=60), 1)  # ties on purpose
    truth = rng.random(60) < 0.3
    pairs = list(product(scores[truth], scores[~truth]))
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(scores, truth) == pytest.approx(expected)


def test_point_and_event_metrics() -> None:
    m = PointMetrics.of(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 0, 1, 1], bool))
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 1, 1)
    assert m.f1 == pytest.approx(2 / 3) and m.far == pytest.approx(0.5) and m.mar == pytest.approx(1 / 3)
    e = event_metrics(np.array([105.0, 300.0, 500.0]), [(100.0, 200.0), (400.0, 450.0)], hours=2.0)
    assert (e.windows, e.detected, e.delays_s, e.false_alarms) == (2, 1, (5.0,), 2)
    assert e.false_alarms_per_hour == 1.0


CONFIG = """
[gateway]
id = "t"
site = "t"
state_dir = "{dir}"
[[devices]]
id = "eval-device"
kind = "equipment"
transport = "simulator"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[outbox]
path = "{dir}/outbox.sqlite"
[[detectors]]
id = "z"
type = "robust_z"
stream = "metric"
channels = ["value"]
params = {{ window_s = 30, threshold = 6 }}
[[alarms]]
condition = "spike"
detector = "z"
min_duration_s = 0
clear_after_s = 5
cooldown_s = 0
"""


def test_replay_goes_through_the_pipeline_and_records_its_scores(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(dir=tmp_path))
    rng = np.random.default_rng(3)
    values = rng.normal(10.0, 1.0, 300)
    values[200:210] += 25.0
    labels = np.zeros(300, bool)
    labels[195:215] = True
    times = T0 + np.arange(300, dtype=np.float64)
    series = Series("s", "g", ("value",), times, values[:, None], labels, [(times[195], times[214])])
    result = replay(load_config(path), series)
    z = result.scores["z"]
    assert np.isnan(z[:28]).all() and np.isfinite(z[40:]).all()  # scored once the window is full
    assert np.nanargmax(z) >= 200 and z[200] > 6
    assert result.starts.size >= 1 and result.starts[0] == times[200]  # the alarm starts on the spike
    assert np.nanmax(result.ensemble()[:190]) < 1.0


def test_the_cli_scores_a_nab_format_corpus_end_to_end(tmp_path: Path) -> None:
    """Two series in NAB's layout: the spike inside each labelled window is found and reported."""
    from tools.evaluate.__main__ import main

    root = tmp_path / "nab"
    (root / "data" / "synthetic").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(4)
    windows = {}
    for k in range(2):
        values = rng.normal(50.0, 1.0, 1500)
        values[1000:1010] += 30.0
        stamps = [f"2020-01-0{1 + i // 1440} {(i % 1440) // 60:02d}:{i % 60:02d}:00" for i in range(1500)]
        rows = "\n".join(f"{t},{v}" for t, v in zip(stamps, values, strict=True))
        (root / "data" / "synthetic" / f"s{k}.csv").write_text("timestamp,value\n" + rows + "\n")
        windows[f"synthetic/s{k}.csv"] = [[stamps[990] + ".000000", stamps[1100] + ".000000"]]
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(dir=tmp_path).replace("window_s = 30", "window_s = 200"))
    out = tmp_path / "report"
    assert (
        main(
            [
                "--config",
                str(config),
                "--dataset",
                "nab",
                "--data",
                str(root),
                "--out",
                str(out),
                "--jobs",
                "1",
                "--plots",
                "0",
                "--target-fa-per-hour",
                "1",
            ]
        )
        == 0
    )
    report = (out / "report.md").read_text()
    standard = next(line for line in report.splitlines() if line.startswith("| standard |"))
    fixed = float(standard.split("|")[2])
    assert fixed > 50.0  # both windows hit early, few false alarms (null is 0, perfect 100)
    assert "2/2 windows hit" in report


def test_per_stream_adapted_thresholds_judge_the_ensemble() -> None:
    """An autoencoder with adapt_rows judges each stream by its own threshold, not the card's: the replay
    must compare every score with the threshold it was judged against (tools/evaluate/configs/skab-residual
    .toml, the shipped pump-residual model, on a synthetic pump with a step)."""
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "tools" / "evaluate" / "configs" / "skab-residual.toml")
    card = json.loads((root / "models" / "pump-residual" / "card.json").read_text(encoding="utf-8"))
    mean, scale = np.asarray(card["normalisation"]["mean"]), np.asarray(card["normalisation"]["scale"])
    rng = np.random.default_rng(4)
    values = mean + 0.5 * scale * rng.standard_normal((700, 8))
    values[550:, [1, 4]] += 4 * scale[[1, 4]]
    labels = np.zeros(700, bool)
    labels[550:] = True
    times = T0 + np.arange(700, dtype=np.float64)
    channels = tuple(config.detectors[0].channels)
    result = replay(config, Series("p", "g", channels, times, values, labels, [(times[550], times[-1])]))
    score, judged = result.scores["pump_ae"], result.judged_against["pump_ae"]
    live = np.isfinite(score)
    assert live[450:].all() and not live[:400].any()  # a verdict once the pump's 400 rows are learnt
    assert np.isfinite(judged[live]).all() and not np.isclose(judged[live], card["threshold"]).any()
    flagged = np.nan_to_num(result.ensemble()) > 1.0
    np.testing.assert_array_equal(flagged, live & (np.nan_to_num(score) > judged))
    assert flagged[560:].mean() > 0.9 and flagged[450:550].mean() < 0.1


# -- simulator --episodes: pumps with injected faults (tools.evaluate.sim_episodes) ----------------------


def test_pump_episodes_alternate_after_an_hour_and_fit_the_run() -> None:
    from tools.evaluate.sim_episodes import pump_episodes

    six = pump_episodes(6.0, 1800.0)
    assert [(e.condition, e.start_s) for e in six] == [
        ("bearing_wear", 3600.0),
        ("temperature_drift", 9000.0),
        ("bearing_wear", 14400.0),
        ("temperature_drift", 19800.0),  # ends at 21600 s: exactly the end of the run, still in
    ]
    assert all(e.duration_s == 1800.0 for e in six)
    assert pump_episodes(1.4, 1800.0) == ()  # no room after the baseline hour


def test_a_start_inside_an_episode_or_within_the_grace_detects_it_and_others_are_false() -> None:
    from agent.simulation import GroundTruth
    from tools.evaluate.sim_episodes import RuleTally

    truth = [
        GroundTruth("bearing_wear", "p", T0 + 3600, T0 + 5400),
        GroundTruth("temperature_drift", "p", T0 + 9000, T0 + 10800),
    ]
    tally = RuleTally()
    # before both (false), twice in the wear episode (first is the delay), 30 s after the drift's end
    # (inside the 60 s grace), and 61 s after the wear's end (false)
    starts = [T0 + 100, T0 + 3700, T0 + 4000, T0 + 5461, T0 + 10830]
    tally.add(starts, truth, (T0, T0 + 6 * 3600), grace_s=60.0)
    assert tally.delays == {"bearing_wear": [100.0], "temperature_drift": [1830.0]}
    assert tally.false_starts == 2
    assert tally.outside_hours == pytest.approx(6 - 2 * 1860 / 3600)
    assert tally.row("bearing_wear") == ("1/1", "100", "100")
    tally.add([], truth, (T0, T0 + 6 * 3600), grace_s=60.0)
    assert tally.row("temperature_drift") == ("1/2", "1830", "1830")


EPISODE_CONFIG = """
[gateway]
id = "t"
site = "t"
state_dir = "{dir}"
[[devices]]
id = "eval-device"
kind = "equipment"
transport = "simulator"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[outbox]
path = "{dir}/outbox.sqlite"
[[detectors]]
id = "always"
type = "limit"
stream = "machine"
channels = ["motor_current"]
params = {{ above = 0 }}
[[detectors]]
id = "hr"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}
[[alarms]]
condition = "current_on"
detector = "always"
min_duration_s = 0
clear_after_s = 5
[[alarms]]
condition = "tachycardia"
detector = "hr"
"""


def test_the_cli_reports_pump_rules_with_episodes(tmp_path: Path) -> None:
    """One pump, 2.5 h: a bearing_wear and a temperature_drift episode. A rule that fires on the first
    sample and never clears detects neither and has one false start; the wearable's rule is not listed."""
    from tools.evaluate.__main__ import main

    config = tmp_path / "agent.toml"
    config.write_text(EPISODE_CONFIG.format(dir=tmp_path))
    out = tmp_path / "report"
    argv = ["--config", str(config), "--dataset", "simulator", "--episodes", "--hours", "2.5"]
    argv += ["--devices", "1", "--seed-base", "5", "--episode-s", "600", "--out", str(out)]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    assert "bearing_wear at 60 min, temperature_drift at 130 min" in report
    assert "within 60 s after its end" in report
    rows = [line for line in report.splitlines() if line.startswith("| current_on |")]
    assert len(rows) == 1 and "tachycardia" not in report
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "0/1" and cells[4] == "0/1"
    assert cells[7] == "1"  # the one start, at the run's first sample
    assert float(cells[8]) == pytest.approx(2.5 - 2 * 660 / 3600, abs=0.01)


def test_data_may_be_the_datasets_root_or_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--data ../shared/datasets` finds SKAB/data below it (audit audml finding 10); a folder without the
    dataset is one usage line naming what was looked for, not a FileNotFoundError traceback."""
    from tools.evaluate.__main__ import main
    from tools.evaluate.datasets import dataset_folder, load_skab

    data = tmp_path / "datasets" / "SKAB" / "data"
    (data / "anomaly-free").mkdir(parents=True)
    (data / "valve1").mkdir()
    header = "datetime;" + ";".join(SKAB_CHANNELS) + ";anomaly;changepoint"
    row = "2020-02-08 13:30:4{};" + ";".join(["1.0"] * len(SKAB_CHANNELS)) + ";{};0"
    for path, label in ((data / "anomaly-free" / "anomaly-free.csv", 0), (data / "valve1" / "0.csv", 1)):
        path.write_text("\r\n".join([header, *(row.format(i, label) for i in range(3))]) + "\r\n")
    for given in (tmp_path / "datasets", tmp_path / "datasets" / "SKAB", data):
        assert dataset_folder(given, "SKAB/data", "anomaly-free/anomaly-free.csv", "SKAB") == data
    assert [s.name for s in load_skab(tmp_path / "datasets")] == ["valve1/0"]

    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--config", "x.toml", "--dataset", "skab", "--data", str(empty), "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            f"no SKAB data in {empty} (looked for anomaly-free/anomaly-free.csv there and in SKAB/data, data"
            " below it): give --data the SKAB folder, e.g. ../shared/datasets/SKAB/data"
        )
    )
