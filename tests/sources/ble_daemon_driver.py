"""Run the real daemon (`agent.cli run`) with the fake radio as its BLE driver, and notify a scenario.

Only the finder and the connector's client are the fake radio's (the real bleak-retry-connector runs);
everything else is the daemon as deployed. Usage: python ble_daemon_driver.py SCENARIO CONFIG. A scenario
is a list of one-second steps, each the (characteristic, payload) pairs notified in that second while the
link is up (a notification the link cannot carry is lost, as on air)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from fake_ble import BATTERY_UUID, HR_UUID, PLX_UUID, FakeFinder, FakeRadio, hr_measurement, plx_continuous

import agent.sources.ble as ble_module
from agent.cli import main
from agent.sources.ble_radio import retry_connector

SENSOR_UNCONNECTED = 1 << 11  # PLX device and sensor status: sensor unconnected to user
Step = list[tuple[str, bytes]]


def hr_stops() -> list[Step]:
    """10 s of HR and SpO2 97; then the HR stops while the oximeter notifies SpO2 80 for 40 s."""
    good = [(PLX_UUID, plx_continuous(97, 72)), (HR_UUID, hr_measurement(72))]
    return [good] * 10 + [[(PLX_UUID, plx_continuous(80, 72))]] * 40


def plx_stops() -> list[Step]:
    """10 s good; the finger comes out: "sensor unconnected" 3 s, then the PLX stops while HR goes on 40 s."""
    hr = (HR_UUID, hr_measurement(72))
    off = (PLX_UUID, plx_continuous(0, 0, sensor=SENSOR_UNCONNECTED))
    return [[(PLX_UUID, plx_continuous(97, 72)), hr]] * 10 + [[off, hr]] * 3 + [[hr]] * 40


def plx_stops_while_low() -> list[Step]:
    """10 s good; SpO2 80 for 12 s (spo2_low); then the PLX stops while HR goes on 30 s."""
    hr = (HR_UUID, hr_measurement(72))
    low = [[(PLX_UUID, plx_continuous(80, 72)), hr]] * 12
    return [[(PLX_UUID, plx_continuous(97, 72)), hr]] * 10 + low + [[hr]] * 30


def rr_impossible() -> list[Step]:
    """5 s of HR with valid RR; 40 s of HR whose RR intervals are 0 and 65535 ticks; 20 s valid again."""
    good = [[(HR_UUID, hr_measurement(72, rr_ticks=(853,)))]]
    return good * 5 + [[(HR_UUID, hr_measurement(72, rr_ticks=(0, 65535)))]] * 40 + good * 20


def battery_only() -> list[Step]:
    """The strap notifies its battery level (Battery Level 0x2A19: one u8 percent) and nothing else."""
    return [[(BATTERY_UUID, bytes([80 - k // 10]))] for k in range(30)]


SCENARIOS = {
    "hr_stops": hr_stops,
    "plx_stops": plx_stops,
    "plx_stops_while_low": plx_stops_while_low,
    "rr_impossible": rr_impossible,
    "battery_only": battery_only,
}


async def notify(radio: FakeRadio, steps: list[Step]) -> None:
    start = time.monotonic()
    for i, step in enumerate(steps):
        await asyncio.sleep(max(0.0, start + i + 1 - time.monotonic()))
        client: Any = radio.client
        for uuid, payload in step:
            if client is not None and client.is_connected and uuid in client.callbacks:
                radio.notify(uuid, payload)
    print("SCENARIO DONE", flush=True)


class DrivingFinder(FakeFinder):
    """Starts the scenario at the daemon's first scan (the radio's events need the daemon's loop)."""

    def __init__(self, radio: FakeRadio, steps: list[Step]) -> None:
        super().__init__(radio)
        self.steps = steps
        self.task: asyncio.Task[None] | None = None

    async def find(self, config: Any, timeout_s: float) -> Any:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(notify(self.radio, self.steps))
        return await super().find(config, timeout_s)


if __name__ == "__main__":
    radio = FakeRadio()
    finder = DrivingFinder(radio, SCENARIOS[sys.argv[1]]())
    ble_module.BleakFinder = lambda: finder  # type: ignore[assignment,misc,return-value]
    ble_module.retry_connector = lambda: retry_connector(radio.client_class())  # type: ignore[assignment,misc]
    sys.exit(main(["run", "--config", sys.argv[2]]))
