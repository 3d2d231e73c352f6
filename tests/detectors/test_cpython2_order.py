"""CPython 2.7's tuple hash and int-keyed dict order (what CAD OSE's tie-breaks rest on)."""

from __future__ import annotations

from agent.detectors.cpython2_order import SlotOrder, tuple_hash


def test_tuple_hash_is_python_2_7_s() -> None:
    # CPython 2.7's values on 64-bit builds (not run here: no Python 2 on this machine; the NAB check of
    # test_context's CAD OSE scores rests on them too); an int -1 hashes to -2
    assert tuple_hash(()) == 3527539
    assert tuple_hash((1, 2)) == 3713081631934410656
    assert tuple_hash((-1,)) == tuple_hash((-2,))


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
