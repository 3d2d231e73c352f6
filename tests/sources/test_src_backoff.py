"""The shared reconnect backoff: growth, cap, jitter range, hints and reset."""

from __future__ import annotations

import random

import pytest

from agent.sources.backoff import Backoff, BackoffPolicy


def test_delays_grow_to_the_cap_within_the_jitter_band() -> None:
    policy = BackoffPolicy(initial_s=0.5, max_s=8.0, factor=2.0, jitter=0.5)
    backoff = Backoff(policy, random.Random(3))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    delays = [backoff.next_delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling * 0.5 <= delay <= ceiling
    assert backoff.attempts == len(ceilings)
    backoff.reset()
    assert backoff.attempts == 0 and backoff.next_delay() <= 0.5


def test_jitter_spreads_simultaneous_retries_and_hints_are_floors_under_the_cap() -> None:
    policy = BackoffPolicy(initial_s=1.0, max_s=3.0, jitter=1.0)
    firsts = {round(Backoff(policy, random.Random(seed)).next_delay(), 6) for seed in range(50)}
    assert len(firsts) == 50 and min(firsts) < 0.3 and max(firsts) > 0.7  # gateways do not retry in step
    backoff = Backoff(policy, random.Random(0))
    assert backoff.next_delay(at_least=2.5) == 2.5  # bleak-retry-connector: out of slots needs time
    assert backoff.next_delay(at_least=60.0) == 3.0  # but never beyond our cap
    no_jitter = Backoff(BackoffPolicy(initial_s=0.2, max_s=1.0, jitter=0.0))
    assert [no_jitter.next_delay() for _ in range(4)] == [0.2, 0.4, 0.8, 1.0]


@pytest.mark.parametrize(
    "kwargs", [{"initial_s": 0.0}, {"initial_s": 5.0, "max_s": 1.0}, {"factor": 0.5}, {"jitter": 1.5}]
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        BackoffPolicy(**kwargs)
