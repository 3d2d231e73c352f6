"""The bounded hand-off of commands from paho's thread to the loop (agent.uplink.command_gate): one
wake-up per batch, at most MAX_WAITING (and MAX_WAITING_BYTES, a larger payload only alone) waiting, at
most RATE_PER_S a second; everything else dropped and counted. The flood end to end, through the real
agent and mosquitto: tests/remote/test_remote_flood.py."""

from __future__ import annotations

from agent.uplink.command_gate import BURST, MAX_WAITING, MAX_WAITING_BYTES, RATE_PER_S, CommandGate
from agent.uplink.mqtt import Command


def command(size: int = 2) -> Command:
    return Command("edge/lab/gw-1/cmd/status", b"x" * size, None, None)


def test_the_loop_is_woken_once_per_batch_and_a_full_queue_drops() -> None:
    now = [0.0]
    gate = CommandGate(clock=lambda: now[0])
    wakes = [gate.offer(command()) for _ in range(MAX_WAITING + 5)]
    assert wakes == [True] + [False] * (MAX_WAITING + 4)  # one wake-up, however many arrive
    assert gate.dropped == 5 and len(gate.take()) == MAX_WAITING
    assert gate.offer(command()) is True  # taken: the next one wakes the loop again


def test_a_large_payload_waits_only_alone() -> None:
    gate = CommandGate()
    assert gate.offer(command(MAX_WAITING_BYTES * 16))  # a bundle, alone: let through
    assert not gate.offer(command()) and gate.dropped == 1  # nothing joins it
    gate.take()
    gate.offer(command())
    assert not gate.offer(command(MAX_WAITING_BYTES)) and gate.dropped == 2  # nor it a small one


def test_no_more_than_the_rate_gets_through() -> None:
    now = [0.0]
    gate = CommandGate(clock=lambda: now[0])
    passed = 0
    for _ in range(100):  # 10 s at 10,000 commands a second, to a loop that takes each at once
        for _ in range(1000):
            gate.offer(command())
            passed += len(gate.take())
        now[0] += 0.1
    assert passed <= BURST + RATE_PER_S * 10 + 1
    assert gate.dropped == 100 * 1000 - passed


def test_a_wake_up_that_never_reached_the_loop_is_asked_again() -> None:
    gate = CommandGate()
    assert gate.offer(command()) is True
    gate.wake_lost()  # the bridge found no loop to hand it to
    assert gate.offer(command()) is True  # without it, no wake-up again until MAX_WAITING, then drops
    assert len(gate.take()) == 2
