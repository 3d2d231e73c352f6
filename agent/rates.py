"""When two sample rates are one: a device's declared rate, a detector's `rate_hz`, a model's training rate.

A HELLO's f32 rate and a config's decimal agree far better than 1 %, and a device's nominal rate and
the rate a training set was measured at agree within it; a real mismatch (2000 Hz read as 1000 Hz, a
250 Hz ECG model fed 500 Hz) is far outside. The pipeline (`agent.pipeline.wiring.DeclaredRates`) and
the model check (`agent.inference.detector.check_input`) use the same rule.
"""

from __future__ import annotations

RATE_TOLERANCE = 0.01  # relative to the reference rate


def rates_agree(rate_hz: float, reference_hz: float) -> bool:
    """`rate_hz` is `reference_hz` within RATE_TOLERANCE of the latter (NaN agrees with nothing)."""
    return abs(rate_hz - reference_hz) <= RATE_TOLERANCE * reference_hz
