"""Slow random processes that can be evaluated at any time without state.

Drifts (heart-rate LF variation, skin temperature, ambient temperature) are sums of a few sinusoids with
seeded random frequencies, amplitudes and phases: a cheap band-limited random process whose value at a
given simulated time is the same whichever chunk asks for it, so chunked and one-shot generation agree
exactly and an endless run needs no growing state. Frequencies are spread log-uniformly over the band so
the spectrum falls off roughly like 1/f, as physiological and thermal drifts do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.readings import FloatArray


@dataclass(frozen=True, slots=True)
class Drift:
    """A zero-mean smooth random process with standard deviation about `std` (sum of sinusoids)."""

    freqs: FloatArray  # Hz
    amps: FloatArray
    phases: FloatArray

    @classmethod
    def make(cls, rng: np.random.Generator, std: float, f_low: float, f_high: float, n: int = 6) -> Drift:
        freqs = np.exp(rng.uniform(np.log(f_low), np.log(f_high), n))
        # amplitude ~ 1/sqrt(f) for a pink-ish spectrum, normalised so the total std is `std`
        raw = 1.0 / np.sqrt(freqs / f_low) * rng.uniform(0.5, 1.5, n)
        amps = raw * std * np.sqrt(2.0) / np.sqrt(np.sum(raw**2))
        return cls(freqs, amps, rng.uniform(0.0, 2.0 * np.pi, n))

    def __call__(self, t: FloatArray) -> FloatArray:
        arg = 2.0 * np.pi * np.outer(t, self.freqs) + self.phases
        out: FloatArray = np.sin(arg) @ self.amps
        return out

    def integral(self, t: FloatArray) -> FloatArray:
        """Antiderivative (up to a constant) of the process: used to integrate rates into phases."""
        arg = 2.0 * np.pi * np.outer(t, self.freqs) + self.phases
        out: FloatArray = -np.cos(arg) @ (self.amps / (2.0 * np.pi * self.freqs))
        return out


def first_order_lag(u: FloatArray, y0: float, dt: float, tau: float) -> FloatArray:
    """Discrete first-order lag y[n] = a*y[n-1] + (1-a)*u[n] from state `y0`, vectorised in closed form.

    The closed form scales by a**-n, which stays well conditioned for chunks much shorter than ~30 tau.
    """
    a = float(np.exp(-dt / tau))
    n = np.arange(1, len(u) + 1, dtype=np.float64)
    powers = a**n
    out: FloatArray = powers * (y0 + (1.0 - a) * np.cumsum(u / powers))
    return out
