"""tools/train/autoencoder, run as a user runs it (`main` with CSV files written here): the threshold is
taken on windows that share no row with training (audit audml finding 5), a constant channel is refused or
floored with its name (finding 7), bad files are refused in one line naming the file and line (finding 11),
and the trained model loads and scores its own threshold windows as the card says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from agent.inference import load_model
from tools.train.autoencoder import main, make_windows, read_columns, tail_split

CHANNELS = ("a", "b", "c")
SMALL = [
    "--window",
    "5",
    "--hidden",
    "6,2",
    "--epochs",
    "1",
    "--channels",
    ",".join(CHANNELS),
    "--rate-hz",
    "1",
]


def write_csv(path: Path, values: np.ndarray, header: tuple[str, ...] = CHANNELS, sep: str = ",") -> Path:
    lines = [sep.join(header), *(sep.join(f"{v:.6f}" for v in row) for row in values)]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")  # CRLF, as SKAB's files are
    return path


def signal(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    return np.sin(t / 7.0 + np.arange(3)) + 0.2 * rng.standard_normal((rows, 3)) + [1.0, 5.0, -2.0]


def test_threshold_windows_are_each_files_tail_after_a_gap(tmp_path: Path) -> None:
    files = [write_csv(tmp_path / f"run{i}.csv", signal(rows, i)) for i, rows in enumerate((240, 130))]
    out = tmp_path / "model"
    assert main(["--data", *map(str, files), "--out", str(out), *SMALL]) == 0
    card = json.loads((out / "card.json").read_text())
    # 236 windows: 47 validate, 4 gap, 185 train; 126 windows: 25, 4, 97
    assert card["training_data"]["val_windows"] == 47 + 25
    assert card["training_data"]["train_windows"] == 185 + 97
    assert "last fifth of each training file's windows, after a gap of 4 windows" in card["threshold_rule"]
    assert "held-out normal windows" not in card["threshold_rule"]
    # mean from the training rows only (each file's first train windows + window - 1 rows)
    head = np.concatenate([signal(240, 0)[:189], signal(130, 1)[:101]])
    assert card["normalisation"]["mean"] == pytest.approx(head.mean(axis=0), abs=1e-6)
    # the card threshold is the quantile of exactly those tail windows' fp32 scores
    model = load_model(out, backend="onnx", precision="fp32")
    tails = np.concatenate(
        [make_windows(read_columns(f, CHANNELS, ","), 5)[-n:] for f, n in zip(files, (47, 25), strict=True)]
    )
    scores, _ = model.score(tails)
    assert card["threshold"] == pytest.approx(float(np.quantile(scores, 0.995)), rel=1e-5)


def test_tail_split_shares_no_row_and_names_a_short_file() -> None:
    ((n_train, n_val),) = tail_split([100], 10, [Path("x.csv")])
    windows = 100 - 10 + 1
    last_train_row = n_train - 1 + 10 - 1
    first_val_row = windows - n_val
    assert last_train_row < first_val_row and first_val_row - last_train_row == 1
    with pytest.raises(ValueError, match=r"short\.csv: 20 rows are too few .* needs at least 2[0-9] rows"):
        tail_split([20], 10, [Path("short.csv")])


def test_val_data_gives_the_threshold_windows(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", signal(200, 0))
    later = write_csv(tmp_path / "later.csv", signal(90, 3))
    out = tmp_path / "model"
    assert main(["--data", str(train), "--val-data", str(later), "--out", str(out), *SMALL]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training_data"]["train_windows"] == 196
    assert card["training_data"]["val_windows"] == 86
    assert "normal windows of later.csv, files not used in training" in card["threshold_rule"]


def test_constant_channel_is_refused_by_name_or_floored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = signal(200, 0)
    values[:, 2] = 1.0
    data = write_csv(tmp_path / "const.csv", values)
    out = tmp_path / "model"
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(data), "--out", str(out), *SMALL])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "channel 'c' is constant in the training data (every value 1)" in err
    assert "--scale-floor" in err and "Traceback" not in err
    assert not (out / "card.json").exists()

    assert main(["--data", str(data), "--out", str(out), "--scale-floor", "0.01", *SMALL]) == 0
    assert "channel 'c': scale raised from its std 0 to 0.01" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert card["normalisation"]["scale"][2] == pytest.approx(0.01)
    assert card["normalisation"]["scale"][0] > 0.5  # the other channels keep their std
    # a 0.1 % change in the floored channel is a small score, not thousands of thresholds
    model = load_model(out, backend="onnx", precision="fp32")
    window = values[:5].copy()
    base, _ = model.score(window[None])
    window[-1, 2] = 1.001
    moved, _ = model.score(window[None])
    assert moved[0] - base[0] < 0.1 * card["threshold"]


def test_bad_files_are_one_line_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def error_of(*args: str) -> str:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--out", str(tmp_path / "model"), *SMALL])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err.strip().splitlines()[-1]

    short = write_csv(tmp_path / "short.csv", signal(3, 0))
    assert error_of("--data", str(short)).endswith(f"{short}: 3 data rows, fewer than the window (5)")

    blank = tmp_path / "blank.csv"
    lines = write_csv(blank, signal(60, 0)).read_text().splitlines()
    lines[41] = lines[41].rsplit(",", 1)[0] + ","  # line 42 of the file: empty field for 'c'
    blank.write_text("\n".join(lines) + "\n")
    assert error_of("--data", str(blank)).endswith(f"{blank}: line 42, column 'c': '' is not a finite number")

    semi = write_csv(tmp_path / "semi.csv", signal(60, 0), sep=";")
    assert "e.g. --delimiter ';'" in error_of("--data", str(semi))
