"""The pattern of two clients with one client id, with a fake clock (agent.uplink.takeover); with a real
mosquitto: test_uplink_takeover.py."""

from __future__ import annotations

from agent.uplink.takeover import IN_A_ROW, SHORT_S, STABLE_S, TakeoverWatch

CLIENT_ID = "gw-ward5"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def flap(watch: TakeoverWatch, clock: FakeClock, lasted: float, reason: int = 0x80) -> str | None:
    watch.connected()
    clock.now += lasted
    told = watch.dropped(reason)
    clock.now += 0.5  # the reconnect
    return told


def test_short_closes_in_a_row_make_the_suspicion_and_a_stable_connection_ends_it() -> None:
    clock = FakeClock()
    watch = TakeoverWatch(CLIENT_ID, clock)
    assert [flap(watch, clock, 1.0) for _ in range(IN_A_ROW - 1)] == [None] * (IN_A_ROW - 1)
    assert watch.current() is None  # one or two: a broker restart, a glitch
    told = flap(watch, clock, 1.0)
    assert told is not None and f"{IN_A_ROW} connections in a row within {SHORT_S:g} s" in told
    assert flap(watch, clock, 1.0) is None  # told once
    assert watch.current() is not None
    watch.connected()
    clock.now += STABLE_S
    assert watch.current() is None  # a connection that lasts: over
    assert [flap(watch, clock, 1.0) for _ in range(IN_A_ROW)][-1] is not None  # a new episode is told


def test_other_drops_break_the_row_and_0x8e_is_the_cause_itself() -> None:
    clock = FakeClock()
    watch = TakeoverWatch(CLIENT_ID, clock)
    assert flap(watch, clock, 1.0) is None
    assert flap(watch, clock, 1.0, reason=0x8D) is None  # a keepalive loss
    assert flap(watch, clock, 1.0) is None
    assert flap(watch, clock, SHORT_S + 1) is None  # lasted: not a takeover's
    assert watch.current() is None
    told = flap(watch, clock, 30.0, reason=0x8E)
    assert told is not None and "0x8e Session taken over" in told and repr(CLIENT_ID) in told
