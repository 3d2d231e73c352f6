"""Units by name: the spellings devices and configs use, and the factor between two units of one quantity.

A serial device declares each channel's unit in its HELLO as free text, and firmware writes the same
unit many ways ("m/s2", "m/s^2", "m/s²", "M/S2"); a detector that reads acceleration expects one unit
(the vibration detector's `unit`). `canonical` maps a spelling to one name, and `factor` gives what a
value in one unit is multiplied by to be in the other, or None when they are not the same quantity or
one is not known: such a value must not be taken as if it were in the expected unit.

Only linear units without offset are here (acceleration, velocity), so a conversion is one factor on
the HELLO's scale and offset alike. Add a quantity by adding its units and their size in its SI unit.
Velocity is here so that a device's `units` (agent.config.devices) can say a channel is a vibration
velocity: "mm/s" on an axis a vibration detector reads as acceleration is refused before start
(agent.pipeline.wiring), not taken as an unknown word; no detector reads velocity in a unit yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

STANDARD_GRAVITY = 9.80665  # m/s2 per g (ISO 80000-3)

# canonical unit -> (quantity, size in that quantity's SI unit)
UNITS: Mapping[str, tuple[str, float]] = MappingProxyType(
    {
        "g": ("acceleration", STANDARD_GRAVITY),
        "mg": ("acceleration", STANDARD_GRAVITY * 1e-3),
        "m/s2": ("acceleration", 1.0),
        "mm/s2": ("acceleration", 1e-3),
        "m/s": ("velocity", 1.0),
        "mm/s": ("velocity", 1e-3),
        "in/s": ("velocity", 0.0254),
    }
)

# other spellings, after `_folded` (lower case, no blanks, "²" and "^2" as "2"), -> canonical unit
_SPELLINGS: Mapping[str, str] = MappingProxyType(
    {
        "gn": "g",
        "g0": "g",
        "milli-g": "mg",
        "millig": "mg",
        "mgn": "mg",
        "ms-2": "m/s2",
        "m/s/s": "m/s2",
        "mm/s/s": "mm/s2",
        "mms-2": "mm/s2",
        "ips": "in/s",
    }
)


def _folded(unit: str) -> str:
    """Case and blanks away, powers written one way: "m/s^2", "m s⁻²", "M/S²" -> "m/s2", "ms-2", "m/s2"."""
    text = "".join(unit.split()).lower()
    for old, new in (("⁻", "-"), ("²", "2"), ("^", ""), ("**", ""), ("·", ""), ("sec", "s")):
        text = text.replace(old, new)
    return text


def canonical(unit: str) -> str | None:
    """The canonical name of `unit` in `UNITS` ("m/s^2" -> "m/s2", "G" -> "g"), or None if not known."""
    folded = _folded(unit)
    if folded in UNITS:
        return folded
    return _SPELLINGS.get(folded)


def factor(declared: str, expected: str) -> float | None:
    """What a value in `declared` is multiplied by to be in `expected` (1.0 for the same unit), or None
    when either is not known or they measure different quantities."""
    have, want = canonical(declared), canonical(expected)
    if have is None or want is None:
        return None
    (quantity, size), (wanted_quantity, wanted_size) = UNITS[have], UNITS[want]
    if quantity != wanted_quantity:
        return None
    return 1.0 if have == want else size / wanted_size


def names_of(quantity: str) -> tuple[str, ...]:
    """The canonical units of `quantity`, for messages and config choices."""
    return tuple(name for name, (q, _) in UNITS.items() if q == quantity)


@dataclass(frozen=True, slots=True)
class ExpectedUnit:
    """The unit (canonical) detector `detector` reads a channel in (agent.pipeline.wiring.expected_units)."""

    unit: str
    detector: str

    @property
    def key(self) -> str:
        """Where the configuration sets it."""
        return f"detectors.{self.detector}.params.unit"


ExpectedUnits = Mapping[tuple[str, str], ExpectedUnit]  # (stream name, channel) -> its expected unit
