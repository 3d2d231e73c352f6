"""BLE source against a fake radio raising bleak's real errors, through the real establish_connection."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDBusError, BleakError
from bleak_retry_connector import BleakOutOfConnectionSlotsError
from fake_ble import (
    ADDRESS,
    BATTERY_UUID,
    HR_UUID,
    PLX_UUID,
    PMD_CP_UUID,
    PMD_DATA_UUID,
    FakeFinder,
    FakeRadio,
    hr_measurement,
)

from agent.config.schema import BleConfig, DeviceConfig
from agent.errors import ConfigError
from agent.readings import Quality, Reading
from agent.sources import open_source
from agent.sources.backoff import BackoffPolicy
from agent.sources.ble import BleSource, classify, matches, retry_connector
from agent.sources.ble_profiles import PROFILES

FAST = BackoffPolicy(initial_s=0.02, max_s=0.2)
DEADLINE_S = 20.0


def ble_device(
    profiles: tuple[str, ...] = ("heart_rate", "battery"), lost_after_s: float = 30.0, timeout_s: float = 1.5
) -> DeviceConfig:
    return DeviceConfig(
        id="bed-3-strap",
        kind="wearable",
        transport="ble",
        lost_after_s=lost_after_s,
        ble=BleConfig(address=ADDRESS, profiles=profiles, connect_timeout_s=timeout_s),
    )


def source_for(radio: FakeRadio, device: DeviceConfig | None = None) -> BleSource:
    return BleSource(
        device or ble_device(),
        finder=FakeFinder(radio),
        connector=retry_connector(radio.client_class()),
        backoff=FAST,
    )


async def next_reading(source: BleSource) -> Reading:
    async with asyncio.timeout(DEADLINE_S):
        return await anext(source)


def test_heart_rate_payloads_become_vitals_and_rr_readings() -> None:
    radio = FakeRadio(battery=10)

    async def main() -> None:
        async with source_for(radio) as source:
            await radio.wait_subscribed(1)
            radio.notify(HR_UUID, hr_measurement(72, contact=True, rr_ticks=(1024, 512)))
            rr1, rr2, vitals = [await next_reading(source) for _ in range(3)]  # the row: a loop turn later
            assert vitals.stream == "bed-3-strap/vitals" and vitals.channels == ("hr",)
            assert vitals.values[0, 0] == 72.0 and vitals.period_s == 1.0  # one row a second, declared
            assert vitals.quality == Quality.LOW_BATTERY  # battery read at connect: 10 %
            assert (rr1.stream, rr1.values[0, 0], rr2.values[0, 0]) == ("bed-3-strap/rr", 1.0, 0.5)
            assert rr2.wall_time - rr1.wall_time == pytest.approx(0.5)
            radio.notify(HR_UUID, hr_measurement(300, contact=False, energy_kj=12))  # u16 value, no contact
            off = await next_reading(source)  # a second after the first row
            assert off.values[0, 0] == 300.0 and off.quality & Quality.NO_CONTACT
            radio.notify(HR_UUID, b"\x10\x48\x00")  # RR flag with an odd-length RR field: malformed
            radio.notify(HR_UUID, hr_measurement(70, contact=None))  # contact feature not supported
            ok = await next_reading(source)
            assert ok.values[0, 0] == 70.0 and not ok.quality & Quality.NO_CONTACT
            stats = source.stats
            assert stats.bad_frames == 1 and stats.connected and source.battery_percent == 10
            assert {uuid for _, uuid in radio.subscriptions} == {HR_UUID, BATTERY_UUID}

    asyncio.run(main())


def test_an_impossible_rr_is_counted_and_dropped_without_moving_the_valid_ones() -> None:
    """Review BLE F5: RR ticks (0, 800, 65535, 820) stamped the valid 800 interval 63.8 s in the past (the
    65535 counted as a 64 s interval), so the rr stream went back 64 s per notification and the pipeline
    filled its windows with ~63 NaN rows each time. Each valid interval ends a later *valid* interval
    before the notification; the impossible ones are counted (errors["bad_rr"]) and not emitted."""
    radio = FakeRadio()

    async def main() -> None:
        async with source_for(radio, ble_device(("heart_rate",))) as source:
            await radio.wait_subscribed(1)
            times: list[float] = []
            for _ in range(3):
                radio.notify(HR_UUID, hr_measurement(72, rr_ticks=(0, 200, 65535, 220)))
                rr: list[Reading] = []
                while len(rr) < 2:  # the vitals rows come once a second, on their own
                    if (reading := await next_reading(source)).stream == "bed-3-strap/rr":
                        rr.append(reading)
                rr1, rr2 = rr
                assert (rr1.values[0, 0], rr2.values[0, 0]) == (200 / 1024, 220 / 1024)
                assert rr2.wall_time == pytest.approx(time.time(), abs=0.5)  # the newest beat: at arrival
                assert rr1.wall_time == pytest.approx(rr2.wall_time - 220 / 1024)
                assert not (rr1.quality | rr2.quality) & Quality.OUT_OF_RANGE
                times += [rr1.wall_time, rr2.wall_time]
                await asyncio.sleep(0.5)  # more than the notification's 0.41 s of valid beats
            assert times == sorted(times)  # the rr stream never goes back
            radio.notify(HR_UUID, hr_measurement(72, rr_ticks=(0, 65535)))  # nothing valid: no rr reading
            radio.notify(HR_UUID, hr_measurement(73))
            while (reading := await next_reading(source)).stream == "bed-3-strap/vitals":
                if reading.values[0, 0] == 73.0:
                    break
            assert reading.stream == "bed-3-strap/vitals" and reading.values[0, 0] == 73.0  # no rr between
            stats = source.stats
            assert stats.errors["bad_rr"] == 3 * 2 + 2 and stats.bad_frames == 0

    asyncio.run(main())


def test_drop_after_notifications_reconnects_resubscribes_and_flags_gap() -> None:
    radio = FakeRadio()

    async def main() -> None:
        async with source_for(radio) as source:
            await radio.wait_subscribed(1)
            first: list[Reading] = []
            for second in range(4):  # 1 Hz notifications: a row each second, in real time here
                radio.notify(HR_UUID, hr_measurement(60 + second))
                first.append(await next_reading(source))
            radio.drop()
            await radio.wait_subscribed(2)  # re-scanned, reconnected and subscribed again
            radio.notify(HR_UUID, hr_measurement(95))
            after = await next_reading(source)
            assert [r.values[0, 0] for r in first] == [60.0 + s for s in range(4)]
            assert all(r.quality == Quality.OK for r in first)
            assert after.values[0, 0] == 95.0 and after.quality == Quality.GAP
            radio.notify(HR_UUID, hr_measurement(96))
            assert (await next_reading(source)).quality == Quality.OK
            stats = source.stats
            assert stats.reconnects == 1 and stats.gaps == 1 and stats.errors["dropped"] == 1
            assert [c for c, u in radio.subscriptions if u == HR_UUID] == [1, 2]

    asyncio.run(main())


def test_connection_aborts_are_retried_by_establish_connection_then_by_the_source() -> None:
    radio = FakeRadio()
    abort = BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"])
    # two aborts: establish_connection retries them itself (transient, 0.25 s each)
    radio.failures.extend([abort, abort])

    async def main() -> None:
        # connect_timeout_s covers establish_connection's own retries: 9 x 0.25 s must fit
        async with source_for(radio, ble_device(timeout_s=5.0)) as source:
            await radio.wait_subscribed(1)
            assert radio.attempts == 3 and not source.stats.errors
            radio.drop()
            # then a run of aborts beyond its transient budget: it raises BleakAbortedError to us
            radio.failures.extend([abort] * 9)
            await radio.wait_subscribed(2)
            assert source.stats.errors["aborted"] == 1 and source.stats.reconnects == 1

    asyncio.run(main())


def test_out_of_slots_waits_and_reconnects() -> None:
    radio = FakeRadio()
    # as an ESPHome proxy reports it; establish_connection backs off 4 s and retries itself
    radio.failures.append(BleakError("Error connecting: no available connection slots"))

    async def main() -> None:
        async with source_for(radio, ble_device(timeout_s=8.0)) as source:
            await radio.wait_subscribed(1)
            assert radio.attempts == 2 and not source.stats.errors  # handled inside establish_connection
            radio.notify(HR_UUID, hr_measurement(80))
            assert (await next_reading(source)).values[0, 0] == 80.0

    asyncio.run(main())
    assert classify(BleakOutOfConnectionSlotsError("x - y: out of connection slots")) == "out_of_slots"


def test_connect_timeout_and_device_gone_end_in_a_clean_lost_state_then_recover() -> None:
    radio = FakeRadio()
    radio.hang_connects = 1  # the first connect never completes: our connect_timeout_s cuts it

    async def main() -> None:
        async with source_for(radio) as source:
            await radio.wait_subscribed(1)
            assert source.stats.errors["timeout"] == 1
            radio.notify(HR_UUID, hr_measurement(65))
            assert (await next_reading(source)).quality == Quality.OK
            radio.advertising = False  # walked out of range
            radio.drop()
            await asyncio.sleep(0.5)
            stats = source.stats
            assert not stats.connected and stats.errors["not_found"] >= 2  # scanning, not failing
            radio.advertising = True
            await radio.wait_subscribed(2)
            radio.notify(HR_UUID, hr_measurement(66))
            back = await next_reading(source)
            assert back.quality == Quality.GAP and source.stats.connected

    asyncio.run(main())


def test_silent_link_is_rebuilt() -> None:
    radio = FakeRadio()

    async def main() -> None:
        async with source_for(radio, ble_device(lost_after_s=0.3)) as source:
            await radio.wait_subscribed(1)
            await radio.wait_subscribed(2)  # no notification for 0.3 s: disconnect and reconnect
            assert source.stats.errors["silent"] >= 1

    asyncio.run(main())


def test_plx_held_into_the_vitals_row() -> None:
    radio = FakeRadio()
    # PLX Continuous: flags 0x08 (device and sensor status present), SpO2 97.0, PR 71 (SFLOAT,
    # exponent 0), status u24 with SENSOR_DISPLACED (bit 13)
    plx = (
        bytes([0x08])
        + (97).to_bytes(2, "little")
        + (71).to_bytes(2, "little")
        + (1 << 13).to_bytes(3, "little")
    )

    async def main() -> None:
        async with source_for(radio, ble_device(("heart_rate", "plx"))) as source:
            await radio.wait_subscribed(1, PLX_UUID)
            radio.notify(HR_UUID, hr_measurement(75))
            alone = await next_reading(source)
            # no PLX value yet: SpO2 and PR are missing from the row (not a "no value", which is flagged)
            assert alone.channels == ("hr",) and alone.values.tolist() == [[75.0]]
            radio.notify(PLX_UUID, plx)
            radio.notify(HR_UUID, hr_measurement(76))
            row = await next_reading(source)  # a second after the first: the newest of each profile
            np.testing.assert_array_equal(row.values, [[76.0, 97.0, 71.0]])
            assert row.quality == Quality.NO_CONTACT  # the oximeter's sensor is displaced

    asyncio.run(main())


def test_matching_and_config_checks() -> None:
    device = BLEDevice(ADDRESS, "H10", {})
    adv = AdvertisementData("Polar H10 1234", {}, {}, ["0000180d-0000-1000-8000-00805f9b34fb"], None, -60, ())
    assert matches(BleConfig(address=ADDRESS.lower()), device, adv)
    assert matches(BleConfig(name="Polar H10 1234", service_uuid="180D"), device, adv)
    assert not matches(BleConfig(service_uuid="1822"), device, adv)
    assert not matches(BleConfig(address="00:11:22:33:44:55"), device, adv)
    with pytest.raises(ConfigError, match="glucose"):
        BleSource(ble_device(("heart_rate", "glucose")))
    assert isinstance(open_source(ble_device()), BleSource)


def pmd_ecg_frame(microvolts: list[int], timestamp_ns: int = 599_000_000_000_000_000) -> bytes:
    """PMD data: measurement type 0 (ECG), u64 timestamp, frame type 0, 3-byte signed µV samples."""
    head = bytes([0x00]) + timestamp_ns.to_bytes(8, "little") + bytes([0x00])
    return head + b"".join(v.to_bytes(3, "little", signed=True) for v in microvolts)


def test_polar_pmd_ecg_is_started_after_every_connect_and_decoded() -> None:
    radio = FakeRadio()
    start_ecg_130hz_14bit = bytes.fromhex("0200000182000101 0e00".replace(" ", ""))

    async def main() -> None:
        async with source_for(radio, ble_device(("heart_rate", "polar_pmd"))) as source:
            await radio.wait_subscribed(1, PMD_DATA_UUID)
            assert radio.writes == [(PMD_CP_UUID, start_ecg_130hz_14bit)]
            assert radio.subscriptions.index((1, PMD_CP_UUID)) < radio.subscriptions.index((1, PMD_DATA_UUID))
            samples = [(-1) ** i * (100 * i) for i in range(73)]  # one H10 frame: 73 samples
            radio.notify(PMD_DATA_UUID, pmd_ecg_frame(samples))
            ecg = await next_reading(source)
            assert ecg.stream == "bed-3-strap/ecg" and ecg.channels == ("ecg",) and ecg.n_samples == 73
            assert ecg.period_s == pytest.approx(1 / 130)
            np.testing.assert_allclose(ecg.values[:, 0], np.array(samples) / 1000.0)
            radio.notify(PMD_DATA_UUID, b"\x00\x01")  # truncated frame: counted
            assert source.stats.bad_frames == 1
            radio.drop()
            await radio.wait_subscribed(2, PMD_DATA_UUID)
            assert len(radio.writes) == 2  # ECG restarted on the new link
            radio.notify(PMD_DATA_UUID, pmd_ecg_frame([5, 6]))
            again = await next_reading(source)
            assert again.quality == Quality.GAP and again.n_samples == 2

    asyncio.run(main())


def test_fuzz_random_notification_payloads_never_raise() -> None:
    radio = FakeRadio()
    rng = random.Random(7)
    profiles = ("heart_rate", "plx", "thermometer", "blood_pressure", "polar_pmd")
    uuids = [PROFILES[p].characteristic for p in profiles]

    async def main() -> None:
        async with source_for(radio, ble_device(profiles)) as source:
            await radio.wait_subscribed(1, PMD_DATA_UUID)

            async def until_marker() -> int:
                count = 0
                while True:
                    reading = await next_reading(source)
                    count += 1
                    if reading.stream == "bed-3-strap/vitals" and reading.values[0, 0] == 61.0:
                        return count

            consumer = asyncio.ensure_future(until_marker())
            for i in range(4000):
                radio.notify(rng.choice(uuids), rng.randbytes(rng.randrange(0, 40)))
                if i % 10 == 0:
                    await asyncio.sleep(0)  # let the consumer drain: the queue is bounded
            radio.notify(HR_UUID, hr_measurement(61))
            assert await consumer > 0
            assert "overflow" not in source.stats.errors
            stats = source.stats
            assert stats.connected and stats.reconnects == 0 and stats.bad_frames > 1000
            assert stats.bytes_in > 50_000

    asyncio.run(main())


def test_ecg_frames_carry_the_straps_contact_bit() -> None:
    # PMD frames say nothing of the electrodes; an H10 off the skin streams noise that the beat finding
    # would read as beats, so its frames are flagged by the heart_rate profile's contact bit
    radio = FakeRadio()

    async def main() -> None:
        async with source_for(radio, ble_device(("heart_rate", "polar_pmd"))) as source:
            await radio.wait_subscribed(1, PMD_DATA_UUID)
            frame = pmd_ecg_frame([100 * i for i in range(73)])
            radio.notify(PMD_DATA_UUID, frame)
            assert (await next_reading(source)).quality == Quality.OK
            radio.notify(HR_UUID, hr_measurement(0, contact=False))
            await next_reading(source)  # the vitals row
            radio.notify(PMD_DATA_UUID, frame)
            assert (await next_reading(source)).quality == Quality.NO_CONTACT
            radio.notify(HR_UUID, hr_measurement(70, contact=True))
            await next_reading(source)
            radio.notify(PMD_DATA_UUID, frame)
            assert (await next_reading(source)).quality == Quality.OK

    asyncio.run(main())


def test_a_profile_silent_while_another_talks_rebuilds_the_link_once_per_silence() -> None:
    # review of 2026-11-30, finding 2: every notification kept the link "alive", so a PLX that stopped
    # beside a working HR was never noticed, nor re-subscribed
    radio = FakeRadio()
    plx = bytes([0x00]) + (97).to_bytes(2, "little") + (71).to_bytes(2, "little")

    async def notify_for(seconds: float, *uuids_payloads: tuple[str, bytes]) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            client = radio.client
            for uuid, payload in uuids_payloads:
                if client is not None and client.is_connected and uuid in client.callbacks:
                    radio.notify(uuid, payload)
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with source_for(radio, ble_device(("heart_rate", "plx"), lost_after_s=0.5)) as source:
            await radio.wait_subscribed(1, PLX_UUID)
            hr = (HR_UUID, hr_measurement(72))
            await notify_for(0.3, hr, (PLX_UUID, plx))
            plx_last = source.stats.profiles_heard["plx"]
            await notify_for(2.5, hr)  # the PLX stops: one rebuild, then the link is kept for the HR
            stats = source.stats
            assert stats.errors["profile_silent"] == 1 and radio.connects == 2 and stats.connected
            assert stats.profiles_heard["plx"] == plx_last and stats.profiles_heard["heart_rate"] > plx_last
            assert "silent" not in stats.errors  # the device itself never went quiet
            await notify_for(0.3, hr, (PLX_UUID, plx))  # back, then stops again: a new silence
            await notify_for(1.5, hr)
            assert source.stats.errors["profile_silent"] == 2 and radio.connects == 3

    asyncio.run(main())
