"""Property test: any valid mix of episodes gives ordered, finite readings and exact ground truth."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from simhelpers import START

from agent.config.schema import DeviceConfig, EpisodeConfig, SimulatorConfig
from agent.readings import Quality
from agent.simulation import CONDITIONS_BY_KIND, simulate

SPAN_S = 150.0


@st.composite
def devices(draw: st.DrawFn) -> DeviceConfig:
    kind = draw(st.sampled_from(["wearable", "equipment"]))
    conditions = sorted(CONDITIONS_BY_KIND[kind])
    episodes = draw(
        st.lists(
            st.builds(
                EpisodeConfig,
                st.sampled_from(conditions),
                st.floats(0.0, SPAN_S, allow_nan=False),
                st.floats(0.5, 100.0, allow_nan=False),
            ),
            max_size=4,
        )
    )
    sim = SimulatorConfig(
        draw(st.integers(-(2**40), 2**40)), 1.0, kind == "wearable" and draw(st.booleans()), tuple(episodes)
    )
    return DeviceConfig("d", kind, "simulator", simulator=sim)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(devices())
def test_any_episode_mix_gives_well_formed_readings(device: DeviceConfig) -> None:
    readings, truth = simulate(device, SPAN_S, START)
    assert device.simulator is not None
    times = np.array([r.wall_time for r in readings])
    assert np.all(np.diff(times) >= 0) and np.all(times >= START) and np.all(times < START + SPAN_S)
    assert all(np.all(np.isfinite(r.values)) for r in readings)
    # `simulate` sets monotonic to simulated seconds: compare with the configuration there, exactly
    episodes = device.simulator.episodes
    dropouts = [(e.start_s, e.start_s + e.duration_s) for e in episodes if e.condition == "dropout"]
    contact = [(e.start_s, e.start_s + e.duration_s) for e in episodes if e.condition == "contact_loss"]
    for r in readings:
        assert not any(a <= r.monotonic < b for a, b in dropouts)
        if r.quality & Quality.NO_CONTACT:
            assert any(a - 0.1 < r.monotonic < b for a, b in contact)
    configured = [(e.condition, START + e.start_s) for e in device.simulator.episodes if e.start_s < SPAN_S]
    assert [(g.condition, g.start) for g in truth] == configured
