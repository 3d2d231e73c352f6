"""Beat times from an integral pulse frequency modulation (IPFM) model of the sinus node.

The instantaneous heart rate is a baseline (per seed, 60-80 bpm) plus a very slow drift, a low-frequency
(Mayer-wave, ~0.1 Hz) drift and respiratory sinus arrhythmia (RSA, ~0.25 Hz with a wandering breathing
rate). The rate is integrated into a phase on a 10 ms grid; a beat fires each time the phase accumulated
since the previous beat reaches a threshold. Thresholds are ~1 with a little scatter in sinus rhythm
(beat-to-beat noise) and drawn from a wide gamma distribution with the RSA removed during AF, which gives an
irregularly irregular ventricular response. Tachycardia and bradycardia blend the rate toward a per-episode
target with raised-cosine ramps. Beats are generated chunk by chunk; the only state carried between chunks
is the phase accumulated since the last beat, so generation is vectorised within each chunk.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from agent.config.schema import EpisodeConfig
from agent.readings import FloatArray
from agent.simulation.episodes import TAG_BEATS, TAG_EPISODE, TAG_PARAMS, inside, plateau, seeded_rng
from agent.simulation.processes import Drift

GRID_S = 0.01  # integration step of the rate into phase
SINUS_THRESHOLD_SD = 0.012  # beat-to-beat scatter in sinus rhythm (fraction of an RR interval)
AF_GAMMA_SHAPE = 14.0  # AF RR intervals: gamma with CV = 1/sqrt(14) ~ 0.27
AF_MIN_THRESHOLD = 0.45  # refractory period: no RR shorter than 45 % of the mean AF interval


@dataclass(frozen=True, slots=True)
class RateEpisode:
    """A rhythm episode with its drawn parameters: target rate (bpm) and ramp lengths (s)."""

    config: EpisodeConfig
    target_bpm: float
    rise_s: float
    fall_s: float


@dataclass(frozen=True, slots=True)
class HeartParams:
    base_bpm: float
    rsa_bpm: float
    resp_hz: float
    slow: Drift  # very slow drift of the rate (minutes)
    lf: Drift  # Mayer waves (~10 s)
    resp_wander: Drift  # wandering breathing frequency (Hz)

    @classmethod
    def draw(cls, seed: int) -> HeartParams:
        rng = seeded_rng(seed, TAG_PARAMS, 0)
        return cls(
            base_bpm=float(rng.uniform(60.0, 80.0)),
            rsa_bpm=float(rng.uniform(2.5, 5.0)),
            resp_hz=float(rng.uniform(0.2, 0.3)),
            slow=Drift.make(rng, 3.0, 1.0 / 1800.0, 1.0 / 120.0),
            lf=Drift.make(rng, 1.5, 0.04, 0.15),
            resp_wander=Drift.make(rng, 0.02, 1.0 / 300.0, 1.0 / 30.0, n=3),
        )


def rate_episodes(seed: int, episodes: tuple[EpisodeConfig, ...]) -> list[RateEpisode]:
    """Draw the target rate and ramps of each tachycardia, bradycardia and AF episode."""
    out = []
    for i, ep in enumerate(episodes):
        rng = seeded_rng(seed, TAG_EPISODE, i)
        ramps = rng.uniform(10.0, 20.0, 2)
        if ep.condition == "tachycardia":
            out.append(RateEpisode(ep, float(rng.uniform(130.0, 160.0)), float(ramps[0]), float(ramps[1])))
        elif ep.condition == "bradycardia":
            out.append(RateEpisode(ep, float(rng.uniform(37.0, 43.0)), float(ramps[0]), float(ramps[1])))
        elif ep.condition == "af":
            out.append(RateEpisode(ep, float(rng.uniform(100.0, 140.0)), 0.0, 0.0))
    return out


@dataclass(slots=True)
class BeatGenerator:
    """Generates beat times (simulated seconds) chunk after chunk; call `generate` with consecutive chunks."""

    seed: int
    params: HeartParams
    episodes: list[RateEpisode]
    since_last_beat: float = field(default=0.0)  # phase (in beats) accumulated since the last beat

    @classmethod
    def create(cls, seed: int, episodes: tuple[EpisodeConfig, ...]) -> BeatGenerator:
        start_phase = float(seeded_rng(seed, TAG_BEATS, 0).uniform(0.0, 1.0))
        return cls(seed, HeartParams.draw(seed), rate_episodes(seed, episodes), start_phase)

    def rate_bpm(self, t: FloatArray) -> tuple[FloatArray, np.ndarray]:
        """Instantaneous rate (bpm) at simulated times `t`, and the mask of times in AF."""
        p = self.params
        resp_phase = 2.0 * np.pi * (p.resp_hz * t + p.resp_wander.integral(t))
        sinus = p.base_bpm + p.slow(t) + p.lf(t)
        rsa = p.rsa_bpm * np.sin(resp_phase)
        rate = sinus + rsa
        af = np.zeros(t.shape, dtype=bool)
        for ep in self.episodes:
            if ep.config.condition == "af":
                mask = inside(t, ep.config)
                af |= mask
                # RSA and the sinus node's drift are gone: the AV node sets an irregular rate
                rate = np.where(mask, ep.target_bpm + 0.5 * p.lf(t), rate)
            else:
                env = plateau(t, ep.config, ep.rise_s, ep.fall_s)
                rate = rate * (1.0 - env) + (ep.target_bpm + 0.5 * p.lf(t) + 0.3 * rsa) * env
        return rate, af

    def generate(self, t0: float, t1: float, chunk_index: int) -> FloatArray:
        """Beat times in [t0, t1); chunks must be asked for in order and without gaps."""
        rng = seeded_rng(self.seed, TAG_BEATS, 1, chunk_index + 1)  # the warm-up chunk is -1
        n = round((t1 - t0) / GRID_S)
        t: FloatArray = t0 + GRID_S * np.arange(n + 1, dtype=np.float64)
        rate, af = self.rate_bpm(t)
        beats_per_s = np.maximum(rate, 20.0) / 60.0
        phase = np.concatenate(([0.0], np.cumsum(0.5 * (beats_per_s[1:] + beats_per_s[:-1]) * GRID_S)))
        # split the chunk into runs of constant rhythm (sinus / AF); a handful per chunk at most
        edges = np.flatnonzero(af[1:] != af[:-1]) + 1
        bounds = [0, *edges.tolist(), n]
        out: list[FloatArray] = []
        for a, b in itertools.pairwise(bounds):
            if b <= a:
                continue
            available = phase[b] - phase[a]
            count = int((self.since_last_beat + available) / AF_MIN_THRESHOLD) + 2
            if af[a]:
                thresholds = np.maximum(
                    rng.gamma(AF_GAMMA_SHAPE, 1.0 / AF_GAMMA_SHAPE, count), AF_MIN_THRESHOLD
                )
            else:
                thresholds = rng.normal(1.0, SINUS_THRESHOLD_SD, count)
            reach = np.cumsum(thresholds) - self.since_last_beat  # phase after `a` at which each beat fires
            overdue = np.flatnonzero(reach <= 0.0)
            if len(overdue):  # the new rhythm's threshold is already passed: one beat right at the switch
                reach = reach[overdue[-1] :]
                reach[0] = 0.0
            reach = reach[reach <= available]
            if len(reach):
                out.append(np.interp(phase[a] + reach, phase[a : b + 1], t[a : b + 1]))
                self.since_last_beat = float(available - reach[-1])
            else:
                self.since_last_beat += float(available)
        if not out:
            return np.empty(0)
        beats = np.concatenate(out)
        return beats[beats < t1]
