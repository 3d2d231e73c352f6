"""CPython 2.7's tuple hash and int-keyed dict order (what CAD OSE's tie-breaks rest on)."""

from __future__ import annotations

from agent.detectors.cpython2_order import SlotOrder, tuple_hash


def test_tuple_hash_is_python_2_7_s() -> None:
    # printed by CPython 2.7.18 (64-bit, pyenv on the build machine); an int -1 hashes to -2
    assert tuple_hash(()) == 3527539
    assert tuple_hash((1, 2)) == 3713081631934410656
    assert tuple_hash((-1,)) == tuple_hash((-2,))
    assert tuple_hash((65536, 65538, 2**31 + 5)) == -4458258889638628298  # CAD OSE-like facts


def test_slot_order_follows_open_addressing_and_growth() -> None:
    order = SlotOrder()
    for key in (10, 3, 40):  # slots 10 & 7 = 2, 3, 40 & 7 = 0
        order.add(key)
    assert list(order) == [40, 10, 3]
    clash = SlotOrder()
    for key in (8, 0):  # 0 finds slot 0 taken by 8 and probes to 5 * 0 + 0 + 1 = 1
        clash.add(key)
    assert list(clash) == [8, 0]
    grown = SlotOrder()
    for key in (30, 20, 10, 5, 1, 0):  # the sixth key fills 2/3 of 8 slots: 32 slots, keys in order
        grown.add(key)
    assert list(grown) == [0, 1, 5, 10, 20, 30]


def test_slot_order_of_scattered_keys_is_python_2_7_s() -> None:
    # keys random.sample(range(100000), 20) under seed 5 and list(d) of a dict filled by d.setdefault in that
    # order, both printed by CPython 2.7.18 (collisions and two resizes)
    keys = [62290, 74178, 79519, 94245, 73989, 92232, 2900, 46562, 94335, 64897,
            90090, 11320, 46906, 24657, 54376, 57394, 1311, 21672, 27948, 91634]  # fmt: skip
    order = SlotOrder()
    for key in keys:
        order.add(key)
    assert list(order) == [64897, 74178, 57394, 73989, 92232, 90090, 94335, 27948, 46562, 91634,
                           1311, 24657, 62290, 2900, 11320, 54376, 46906, 79519, 21672, 94245]  # fmt: skip
