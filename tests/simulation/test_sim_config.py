"""Bad simulator settings raise ConfigError naming the key and listing what is valid."""

from __future__ import annotations

import pytest
from simhelpers import START, equipment, wearable

from agent.errors import ConfigError
from agent.simulation import CONDITIONS_BY_KIND, SimulatorSource, simulate


def test_unknown_condition_names_the_key_and_lists_valid_ones() -> None:
    device = wearable(1, ("tachycardia", 10, 10), ("asystolia", 50, 10))
    with pytest.raises(ConfigError) as err:
        simulate(device, 60, START)
    assert err.value.path == "devices.w1.simulator.episodes[1].condition"
    assert "asystolia" in err.value.problem
    for name in CONDITIONS_BY_KIND["wearable"]:
        assert name in err.value.problem


def test_condition_of_the_wrong_kind_is_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        SimulatorSource(equipment(1, ("tachycardia", 10, 10)))
    assert err.value.path == "devices.pump7.simulator.episodes[0].condition"
    assert "bearing_wear" in err.value.problem
    with pytest.raises(ConfigError) as err2:
        SimulatorSource(wearable(1, ("bearing_wear", 10, 10)))
    assert err2.value.path == "devices.w1.simulator.episodes[0].condition"


@pytest.mark.parametrize(
    ("episode", "key"),
    [(("af", -5, 10), "start_s"), (("af", 5, 0), "duration_s"), (("af", 5, float("nan")), "duration_s")],
)
def test_bad_episode_times(episode: tuple[str, float, float], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        simulate(wearable(1, episode), 60, START)
    assert err.value.path == f"devices.w1.simulator.episodes[0].{key}"


def test_conditions_by_kind_is_what_the_loader_needs() -> None:
    assert set(CONDITIONS_BY_KIND) == {"wearable", "equipment"}
    assert {
        "tachycardia",
        "bradycardia",
        "af",
        "spo2_desaturation",
        "contact_loss",
        "dropout",
    } <= CONDITIONS_BY_KIND["wearable"]
    assert {"bearing_wear", "temperature_drift", "stuck_sensor", "dropout"} <= CONDITIONS_BY_KIND["equipment"]
