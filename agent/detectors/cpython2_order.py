"""CPython 2.7's tuple hash and dict iteration order, which CAD OSE's tie-breaks depend on.

CAD OSE (NAB's `context_ose`, run under Python 2.7 for NAB's scoreboard) ranks equally activated contexts
by the hash of their left, then right, fact tuples, and generalises contexts in the iteration order of an
int-keyed dict; the numbers it gives new contexts become facts themselves, so both orders shape everything
it learns afterwards. `ContextMemory` reproduces them to give CAD OSE's scores, not merely similar ones.
Written from CPython 2.7's documented hashing and open-addressing rules (Objects/tupleobject.c,
Objects/dictobject.c), on 64-bit builds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_MASK64 = (1 << 64) - 1
_PERTURB_SHIFT = 5
_MIN_SIZE = 8


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def tuple_hash(items: Iterable[int]) -> int:
    """hash() of a tuple of ints in CPython 2.7 (64-bit): an int hashes to itself (-1 to -2)."""
    values = list(items)
    x, mult, left = 0x345678, 1000003, len(values)
    for item in values:
        left -= 1
        x = _signed64((x ^ (-2 if item == -1 else item)) * mult)
        mult = _signed64(mult + 82520 + left + left)
    x = _signed64(x + 97531)
    return -2 if x == -1 else x


class SlotOrder:
    """The iteration order of a CPython 2.7 dict whose keys are non-negative ints, inserted (never
    removed) in the order `add` is called: each key's slot by open addressing, the table growing to the
    next power of two above 4 x the keys (2 x above 50,000) when two thirds of it is filled."""

    __slots__ = ("_slots", "_used")

    def __init__(self) -> None:
        self._slots: list[int | None] = [None] * _MIN_SIZE
        self._used = 0

    def add(self, key: int) -> None:
        """Insert a key not yet present."""
        _place(self._slots, key)
        self._used += 1
        if self._used * 3 >= len(self._slots) * 2:  # no deletions: filled slots = keys
            size = _MIN_SIZE
            while size <= (2 if self._used > 50_000 else 4) * self._used:
                size <<= 1
            old, self._slots = self._slots, [None] * size
            for present in old:  # re-inserted in the old table's order, as CPython does
                if present is not None:
                    _place(self._slots, present)

    def __iter__(self) -> Iterator[int]:
        return (key for key in self._slots if key is not None)


def _place(slots: list[int | None], key: int) -> None:
    mask = len(slots) - 1
    i = key & mask
    perturb = key
    while slots[i & mask] is not None:
        i = ((i << 2) + i + perturb + 1) & _MASK64
        perturb >>= _PERTURB_SHIFT
    slots[i & mask] = key
