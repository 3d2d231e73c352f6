"""The model card: what a model file expects and how it was made, read from `card.json` beside it.

The card is the contract between the training tools and the gateway. Parsing is strict: every field is
checked for presence and type, and any problem is one ModelError naming the model and the field, so a bad
card stops the agent at start-up instead of producing meaningless scores later. The card also lists the
sha256 of each artifact, so a truncated or swapped file is refused before a runtime ever parses it.

Fields added on 2026-11-30 (`input`, and the documentation fields `licence`, `intended_use`, `limits`,
`build`) are optional, because the shipped cards are signed and the signing key is not in the repository:
a card made before then parses as before, a card that has them gets them checked. `input` says what a
window is (consecutive samples of a stream, or one heart beat) and the sample rate the model was trained
at; the detector refuses a stream that does not match it (`agent.inference.detector`). For cards without
it, the ECG beat model's signed `preprocessing` (`beat_window_s`, `sample_rate_hz`) says the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.errors import ModelError

CARD_FILE = "card.json"
# Artifact keys in the card; the part before "_" is the backend that runs it.
ARTIFACT_KEYS = ("onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8")
# What one window of the model is: "stream", `window` consecutive samples of a stream at `input.rate_hz`;
# "beats", one heart beat cut around its R peak and resampled to `window` points (agent.inference.beats).
INPUT_KINDS = ("stream", "beats")


@dataclass(frozen=True, slots=True)
class Artifact:
    file: str  # relative to the card's directory
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    version: str
    architecture: str  # "dense" or "conv"
    window: int  # samples per window
    hop: int  # samples between window ends when the detector runs on a stream
    channels: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, subtracted before the model
    scale: tuple[float, ...]  # per channel, divided after subtracting the mean
    threshold: float  # on the mean squared reconstruction error of a normalised window
    # Share of each stream's principal window subspace taken off before the model (0: the model sees the
    # standardised window itself). A property of the training data, so the detector must match it.
    pca_fraction: float
    training_data_sha256: str
    # `input.kind` (INPUT_KINDS) and the sample rate the model was trained at (None: the card does not say).
    input_kind: str
    rate_hz: float | None
    metrics: Mapping[str, Any]
    artifacts: Mapping[str, Artifact]
    runtimes: Mapping[str, str]
    raw: Mapping[str, Any]  # the parsed JSON, for the canonical form that signatures cover

    def normalise(self, windows: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """(B, W, C) raw values to the model's input space."""
        mean = np.asarray(self.mean, np.float64)
        scale = np.asarray(self.scale, np.float64)
        return ((windows - mean) / scale).astype(np.float32)

    def artifact(self, key: str) -> Artifact:
        try:
            return self.artifacts[key]
        except KeyError:
            raise ModelError(
                self.name, f"card lists no '{key}' artifact (has: {sorted(self.artifacts)})"
            ) from None


def canonical_json(raw: Mapping[str, Any]) -> bytes:
    """The byte form a signature covers: key order and whitespace of the file do not matter."""
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _Fields:
    """Typed accessors that turn a missing or mistyped field into a ModelError naming it."""

    def __init__(self, model: str, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.model = model
        self.raw = raw
        self.prefix = prefix  # "input.": the field names in messages are the card's paths

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in self.raw:
            raise ModelError(self.model, f"card field '{self.prefix}{key}' is missing")
        value = self.raw[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ModelError(
                self.model, f"card field '{self.prefix}{key}' must be {_kind_name(kind)}, got {value!r}"
            )
        return value

    def positive_int(self, key: str) -> int:
        value: int = self.get(key, int)
        if value < 1:
            raise ModelError(self.model, f"card field '{key}' must be >= 1, got {value}")
        return value

    def floats(self, parent: str, key: str, n: int, *, positive: bool = False) -> tuple[float, ...]:
        values = self.get(key, list)
        if len(values) != n or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ModelError(
                self.model, f"card field '{parent}.{key}' must be {n} finite numbers (one per channel)"
            )
        if positive and any(v <= 0 for v in values):
            raise ModelError(self.model, f"card field '{parent}.{key}' must be > 0 for every channel")
        return tuple(float(v) for v in values)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_card(raw: Mapping[str, Any], fallback_name: str) -> ModelCard:
    if not isinstance(raw, Mapping):
        raise ModelError(fallback_name, "card must be a JSON object")
    name = raw.get("name") if isinstance(raw.get("name"), str) else fallback_name
    f = _Fields(str(name), raw)
    channels = tuple(f.get("channels", list))
    if not channels or not all(isinstance(c, str) and c for c in channels):
        raise ModelError(str(name), "card field 'channels' must be a non-empty list of channel names")
    if len(set(channels)) != len(channels):
        raise ModelError(str(name), "card field 'channels' names a channel twice")
    norm = _Fields(str(name), f.get("normalisation", dict))
    threshold = float(f.get("threshold", (int, float)))
    if not math.isfinite(threshold) or threshold <= 0:
        raise ModelError(str(name), f"card field 'threshold' must be a finite number > 0, got {threshold}")
    artifacts: dict[str, Artifact] = {}
    for key, entry in f.get("artifacts", dict).items():
        a = _Fields(str(name), entry if isinstance(entry, Mapping) else {})
        digest = a.get("sha256", str)
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ModelError(str(name), f"card field 'artifacts.{key}.sha256' is not a hex sha256")
        artifacts[key] = Artifact(file=a.get("file", str), sha256=digest)
    if not artifacts:
        raise ModelError(str(name), "card field 'artifacts' lists no model file")
    training = _Fields(str(name), f.get("training_data", dict))
    runtimes = f.get("runtimes", dict)
    input_kind, rate_hz = _input(str(name), raw)
    _check_documentation(f)
    return ModelCard(
        name=str(name),
        version=f.get("version", str),
        architecture=f.get("architecture", str),
        window=f.positive_int("window"),
        hop=f.positive_int("hop"),
        channels=channels,
        mean=norm.floats("normalisation", "mean", len(channels)),
        scale=norm.floats("normalisation", "scale", len(channels), positive=True),
        threshold=threshold,
        pca_fraction=_pca_fraction(str(name), raw.get("preprocessing", {})),
        training_data_sha256=training.get("sha256", str),
        input_kind=input_kind,
        rate_hz=rate_hz,
        metrics=f.get("metrics", dict),
        artifacts=artifacts,
        runtimes={str(k): str(v) for k, v in runtimes.items()},
        raw=raw,
    )


def _pca_fraction(model: str, preprocessing: Any) -> float:
    """`preprocessing.pca_fraction`, optional (absent: 0); any other preprocessing key is documentation."""
    value = preprocessing.get("pca_fraction", 0.0) if isinstance(preprocessing, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ModelError(
            model, f"card field 'preprocessing.pca_fraction' must be a number in [0, 1), got {value!r}"
        )
    return float(value)


def _input(model: str, raw: Mapping[str, Any]) -> tuple[str, float | None]:
    """`input.kind` and `input.rate_hz`, both required when `input` is present. A card without it (made
    before 2026-11-30, signed) says the same through its preprocessing where it can: the ECG beat model's
    `beat_window_s` and `sample_rate_hz`. Otherwise it is a stream model of unknown rate."""
    if "input" not in raw:
        pre = raw.get("preprocessing")
        pre = pre if isinstance(pre, Mapping) else {}
        rate = pre.get("sample_rate_hz")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            rate = None
        return ("beats" if "beat_window_s" in pre else "stream"), (None if rate is None else float(rate))
    spec = _Fields(model, _Fields(model, raw).get("input", dict), "input.")
    kind = spec.get("kind", str)
    if kind not in INPUT_KINDS:
        raise ModelError(
            model, f"card field 'input.kind' must be one of {', '.join(INPUT_KINDS)}, got {kind!r}"
        )
    rate = float(spec.get("rate_hz", (int, float)))
    if not math.isfinite(rate) or rate <= 0:
        raise ModelError(model, f"card field 'input.rate_hz' must be a finite number > 0, got {rate}")
    return kind, rate


def _check_documentation(f: _Fields) -> None:
    """The fields a card carries for the people who deploy it (docs/models.md): not used by the gateway,
    but a card that has them must have them in the documented form."""
    for key in ("licence", "intended_use"):
        if key in f.raw:
            f.get(key, str)
    if "limits" in f.raw and not all(isinstance(v, str) for v in f.get("limits", list)):
        raise ModelError(f.model, "card field 'limits' must be a list of strings")
    if "build" in f.raw:
        build = _Fields(f.model, f.get("build", dict), "build.")
        build.get("command", str)
        for key in ("tool", "commit"):
            if key in build.raw:
                build.get(key, str)


def load_card(model_dir: Path) -> ModelCard:
    """Read and check `<model_dir>/card.json`."""
    path = model_dir / CARD_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(model_dir.name, f"no model card at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(model_dir.name, f"model card {path} is unreadable: {exc}") from None
    return parse_card(raw, model_dir.name)
