"""docs/detectors.md's "Detector types" table names every registered type, with its params and defaults.

The code side is observed: each type in `agent.detectors.registry.TYPES` is built through the real
`from_config` while `ParamReader` records every key it reads and the default it passes; `finish()` (the
point where a type has read all its params) stops the build, so no model file or valid combination of
values is needed. Documented defaults are read from the "`key` (default, explanation)" notation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.reader import REQUIRED
from agent.config.schema import DetectorConfig
from agent.detectors.params import ParamReader
from agent.detectors.registry import TYPES, build_detector
from agent.errors import ConfigError

DETECTORS_MD = Path(__file__).resolve().parents[2] / "docs" / "detectors.md"

UNSTATED: Any = type("Unstated", (), {"__repr__": lambda self: "UNSTATED"})()  # a key read raw, no default

# Params every build needs before it reaches finish(), and the stream rate it is built at.
MINIMAL_PARAMS: dict[str, dict[str, Any]] = {
    "limit": {"above": 120},
    "rate_of_change": {"max_rate": 5},
    "autoencoder": {"model": "no-model-needed"},  # finish() stops the build before the model is loaded
}
RATE_HZ: dict[str, float] = {"vibration": 3200.0}  # its default ISO band needs a Nyquist above 1000 Hz

# Defaults the docs state in words because the code passes a placeholder resolved elsewhere.
# (type, key) -> (the docs' text, the code's default, why they mean the same).
PROSE_DEFAULTS: dict[tuple[str, str], tuple[str, Any, str]] = {
    ("limit", "window_s"): ("= hop", 1.0, "the default is hop samples / rate_hz: 1 s at the default hop"),
    ("af", "verdict_beats"): ("min_differences + 1", 3, "computed from min_differences (default 2)"),
    ("autoencoder", "hop_s"): ("card's hop", None, "None takes the model card's hop"),
    ("autoencoder", "threshold"): ("card's", None, "None takes the model card's threshold"),
    ("autoencoder", "pca_fraction"): (
        "card's `preprocessing.pca_fraction`, 0 if none; another value is refused;"
        " needs `adapt_rows` when > 0",
        None,
        "None takes the model card's pca_fraction",
    ),
    ("autoencoder", "public_key"): ("none", "", '"" means no model key'),
    ("vibration", "zone_boundaries"): ("the class's", UNSTATED, "read raw; absent: machine_class's zones"),
    (
        "vibration",
        "bands",
    ): ("edges 10, 100, 1000, 5000 Hz up to Nyquist", UNSTATED, "read raw; absent: computed from the rate"),
    ("window_pca", "min_scale"): ("1e-6", None, "None is replaced by 1e-6 for every channel"),
}


class _AllParamsReadError(Exception):
    """Raised from finish(): the type has read every param it knows."""


def code_params(detector_type: str) -> dict[str, Any]:
    """{key: default passed by the type} for every param `detector_type` reads."""
    seen: dict[str, Any] = {}
    patch = pytest.MonkeyPatch()

    def recording(name: str) -> None:
        original = getattr(ParamReader, name)

        def method(self: ParamReader, key: str, default: Any = UNSTATED, *args: Any, **kwargs: Any) -> Any:
            seen.setdefault(key, default)  # the outermost getter's default (positive() calls number())
            return (
                original(self, key, default, *args, **kwargs)
                if default is not UNSTATED
                else original(self, key)
            )

        patch.setattr(ParamReader, name, method)

    for name in ("number", "text", "count", "per_channel", "_get"):
        recording(name)

    def finish(self: ParamReader) -> None:
        raise _AllParamsReadError

    patch.setattr(ParamReader, "finish", finish)
    config = DetectorConfig(
        id="d", type=detector_type, stream="s", channels=("x",), params=MINIMAL_PARAMS.get(detector_type, {})
    )
    try:
        with pytest.raises(_AllParamsReadError):
            build_detector(config, RATE_HZ.get(detector_type, 1.0))
    finally:
        patch.undo()
    return seen


def _top_level_params(cell: str) -> Iterator[tuple[str, str | None]]:
    """("key", "text in its parentheses" or None) for each `key` outside any parentheses."""
    depth, i = 0, 0
    while i < len(cell):
        char = cell[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "`" and depth == 0:
            end = cell.index("`", i + 1)
            name = cell[i + 1 : end]
            i = end + 1
            if not re.fullmatch(r"[a-z_]+", name):
                continue
            rest = cell[i:]
            if rest.startswith(" ("):
                level, j = 0, 1
                while True:
                    level += {"(": 1, ")": -1}.get(rest[j], 0)
                    if level == 0:
                        break
                    j += 1
                yield name, rest[2:j]
                i += j + 1
            else:
                yield name, None
            continue
        i += 1


def documented_params(markdown: str) -> dict[str, dict[str, str | None]]:
    """{type: {key: its parenthesis}} from the "Detector types" table."""
    section = markdown[markdown.index("## Detector types") :]
    rows: dict[str, dict[str, str | None]] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        match = re.match(r"^\| `([a-z_0-9]+)` \| (.*?) \|", line)
        if match:
            params = dict(_top_level_params(match.group(2)))
            assert len(params) == len(list(_top_level_params(match.group(2)))), (
                f"{match.group(1)}: a key twice"
            )
            rows[match.group(1)] = params
    return rows


def parse_default(text: str) -> Any:
    """The value a parenthesis states: its first part, before ";", ", " or ":". Prose raises ValueError."""
    first = re.split(r";|, |:", text, maxsplit=1)[0].strip()
    if first.startswith("required"):
        return REQUIRED
    if first == "none":
        return None
    number = re.fullmatch(r"(-?\d+(\.\d+)?([eE]-?\d+)?)( (samples?|beats?))?", first)
    if number:
        return float(number.group(1))
    code = re.fullmatch(r"`([^`]+)`", first)
    if code:
        return code.group(1)
    raise ValueError(f"not a value: {text!r}")


def same_value(documented: Any, code: Any) -> bool:
    if documented is None or code is None or documented is REQUIRED:
        return documented is code
    if isinstance(documented, float):
        return isinstance(code, int | float) and not isinstance(code, bool) and float(code) == documented
    return bool(documented == code)


DOCUMENTED = documented_params(DETECTORS_MD.read_text())


def test_every_registered_type_has_a_row_and_no_other() -> None:
    assert sorted(DOCUMENTED) == sorted(TYPES)


@pytest.mark.parametrize("detector_type", sorted(TYPES))
def test_documented_params_are_the_types(detector_type: str) -> None:
    code = code_params(detector_type)
    documented = DOCUMENTED.get(detector_type, {})
    assert sorted(set(documented) - set(code)) == [], "documented, but the type does not read them"
    assert sorted(set(code) - set(documented)) == [], "read by the type, not in docs/detectors.md"
    problems = []
    for key, text in sorted(documented.items()):
        if text is None:
            problems.append(f"{key}: no default stated; write `{key}` (default) or (required)")
            continue
        if (detector_type, key) in PROSE_DEFAULTS:
            prose, placeholder, _why = PROSE_DEFAULTS[(detector_type, key)]
            if not text.startswith(prose) or not same_value(placeholder, code[key]):
                problems.append(f"{key}: exemption stale: docs ({text}), code default {code[key]!r}")
            continue
        try:
            stated = parse_default(text)
        except ValueError as exc:
            problems.append(f"{key}: {exc} (state a value, or add a PROSE_DEFAULTS entry)")
            continue
        if stated is REQUIRED:
            problems.extend(_required_problems(detector_type, key))
        elif not same_value(stated, code[key]):
            problems.append(f"{key}: docs say ({text}), the code's default is {code[key]!r}")
    assert problems == []


def _required_problems(detector_type: str, key: str) -> list[str]:
    """A documented "required" key: building without it must fail naming it."""
    params = {k: v for k, v in MINIMAL_PARAMS.get(detector_type, {}).items() if k != key}
    config = DetectorConfig(id="d", type=detector_type, stream="s", channels=("x",), params=params)
    try:
        build_detector(config, RATE_HZ.get(detector_type, 1.0))
    except ConfigError as exc:
        if exc.path == f"detectors.d.params.{key}":
            return []
        return [f"{key}: documented required, but leaving it out fails at {exc.path}"]
    return [f"{key}: documented required, but the type builds without it"]


def test_prose_exemptions_are_all_still_documented() -> None:
    stale = [k for k in PROSE_DEFAULTS if k[1] not in DOCUMENTED.get(k[0], {})]
    assert stale == []


def test_the_notation_is_read_as_written() -> None:
    row = "one RR channel (s); `threshold` (0.057), `hop_beats` (0: one hop of `hop_s`), `unit` (`g`; `m/s2`)"
    row += ", `x`"
    assert list(_top_level_params(row)) == [
        ("threshold", "0.057"),
        ("hop_beats", "0: one hop of `hop_s`"),
        ("unit", "`g`; `m/s2`"),
        ("x", None),
    ]
    assert parse_default("1e-6, number or table per channel") == 1e-6
    assert parse_default("6 samples") == 6.0
    assert parse_default("required: number or table per channel, units/s") is REQUIRED
    with pytest.raises(ValueError):
        parse_default("the class's")
