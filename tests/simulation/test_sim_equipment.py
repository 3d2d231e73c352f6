"""Equipment model: ranges, load coupling, and the bearing wear / temperature drift / stuck signatures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from simhelpers import START, equipment, series

from agent.simulation import simulate


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_normal_machine_ranges_and_load_coupling(seed: int) -> None:
    readings, _ = simulate(equipment(seed), 3600, START)
    m = series(readings, "pump7/machine")
    assert m.channels == ("vibration_rms", "bearing_temp", "motor_current")
    assert len(m.t) == 3600 and np.all(m.quality == 0)
    vib, temp, cur = m.col("vibration_rms"), m.col("bearing_temp"), m.col("motor_current")
    assert vib.min() >= 0.5 and vib.max() <= 3.5
    assert temp.min() >= 25 and temp.max() <= 70
    assert cur.min() >= 1.5 and cur.max() <= 18
    assert np.ptp(cur) > 2.0  # load cycles
    assert np.corrcoef(vib, cur)[0, 1] > 0.3  # vibration rises with load


def test_same_seed_same_machine() -> None:
    a = series(simulate(equipment(9), 600, START)[0], "pump7/machine").values
    b = series(simulate(equipment(9), 600, START)[0], "pump7/machine").values
    c = series(simulate(equipment(10), 600, START)[0], "pump7/machine").values
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bearing_wear_grows_vibration_and_temperature(seed: int) -> None:
    # the random streams do not depend on the episodes, so the same seed without wear is the counterfactual
    worn = series(simulate(equipment(seed, ("bearing_wear", 1800, 1800)), 3600, START)[0], "pump7/machine")
    healthy = series(simulate(equipment(seed), 3600, START)[0], "pump7/machine")
    ratio = worn.col("vibration_rms") / healthy.col("vibration_rms")
    assert np.allclose(ratio[:1800], 1.0)
    quarters = [
        np.median(worn.between(1800 + 450 * k, 2250 + 450 * k).col("vibration_rms")) for k in range(4)
    ]
    assert all(b > a for a, b in itertools.pairwise(quarters))
    assert quarters[-1] > 2.0 * np.median(worn.between(0, 1800).col("vibration_rms"))
    assert ratio[3599] > 2.5
    heating = worn.col("bearing_temp") - healthy.col("bearing_temp")
    assert np.all(np.abs(heating[:1800]) < 1e-9)
    assert heating[2400] < heating[3000] < heating[3599]
    assert heating[3599] > 3.0
    assert np.array_equal(worn.col("motor_current"), healthy.col("motor_current"))


def test_temperature_drift() -> None:
    readings, _ = simulate(equipment(4, ("temperature_drift", 600, 1200)), 1800, START)
    m = series(readings, "pump7/machine")
    plain = series(simulate(equipment(4), 1800, START)[0], "pump7/machine")
    diff = m.col("bearing_temp") - plain.col("bearing_temp")
    assert np.all(np.abs(diff[:600]) < 1e-9)
    assert 7.0 <= diff[1790 - 1] <= 16.0
    assert np.all(np.diff(diff[600:1800]) >= -0.11)  # a monotone drift up to rounding
    assert np.array_equal(m.col("vibration_rms"), plain.col("vibration_rms"))


def test_stuck_sensor_holds_the_last_value() -> None:
    readings, truth = simulate(equipment(5, ("stuck_sensor", 90, 100)), 300, START)
    m = series(readings, "pump7/machine")
    during = m.between(90, 190).values
    frozen = [j for j in range(3) if np.ptp(during[:, j]) == 0]
    assert len(frozen) == 1
    assert truth[0].channel == m.channels[frozen[0]]
    assert during[0, frozen[0]] == m.between(89, 90).values[0, frozen[0]]


def test_a_stopped_pump_draws_no_current_cools_down_and_starts_with_an_inrush() -> None:
    """The `stopped` episode (a standby pump, duty rotation): no fault, what a switched-off motor reads."""
    m = series(simulate(equipment(4, ("stopped", 1200, 1200)), 3000, START)[0], "pump7/machine")
    t = m.t - m.t[0]
    vib, temp, cur = m.col("vibration_rms"), m.col("bearing_temp"), m.col("motor_current")
    off = (t >= 1200) & (t < 2400)
    assert cur[off].max() < 0.3 and cur[~off].min() > 1.5  # idle draws 2.5 A or more
    assert vib[off].max() < 0.2 and vib[~off].min() > 0.5
    assert temp[t < 1200][-60:].mean() - temp[off][-60:].mean() > 5  # cooling toward ambient
    start = np.flatnonzero(t >= 2400)[0]
    assert cur[start] > 3 * cur[start + 120 : start + 180].mean()  # the inrush, gone within a minute
