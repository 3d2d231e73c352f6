"""Test helpers: a replaceable pseudo-terminal behind a stable symlink, and async reading with deadlines."""

from __future__ import annotations

import asyncio
import os
import threading
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.config.schema import DeviceConfig, DeviceKind, SerialConfig
from agent.readings import Reading
from firmware_bridge.emulator import EmulatedChannel, FaultPlan, SerialDeviceEmulator
from firmware_bridge.frame_messages import ChannelSpec, SampleType

DEADLINE_S = 20.0  # generous: the machine is shared and noisy


def const(value: float) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
    return lambda t: value + 0.0 * t


def ramp(rate: float) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
    return lambda t: rate * t


CHANNELS = [
    EmulatedChannel(ChannelSpec("ecg", "mV", SampleType.INT16, 250.0, 0.001), ramp(0.01)),
    EmulatedChannel(ChannelSpec("hr", "bpm", SampleType.INT16, 1.0, 0.1), const(72.0)),
    EmulatedChannel(ChannelSpec("spo2", "%", SampleType.INT16, 1.0, 0.1), const(97.5)),
]


class PtyDevice:
    """A pty whose slave is reachable at `link` (like /dev/serial/by-id/…); `replug()` swaps the pty."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.emulator: SerialDeviceEmulator | None = None

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)  # atomic, as udev swaps a by-id link

    def start(
        self,
        speed: float = 20.0,
        faults: FaultPlan | None = None,
        max_blocks: int | None = None,
    ) -> SerialDeviceEmulator:
        self.emulator = SerialDeviceEmulator(self.master, "emu-1", CHANNELS, speed=speed, faults=faults)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.emulator.run,
            args=(self._stop, max_blocks),
            kwargs={"answer_commands": True},
            daemon=True,
        )
        self._thread.start()
        return self.emulator

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            assert not self._thread.is_alive()
            self._thread = None

    def unplug(self) -> None:
        self.stop()
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]


def serial_device(port: Path, kind: DeviceKind = "wearable", **serial: object) -> DeviceConfig:
    return DeviceConfig(
        id="bed-7",
        kind=kind,
        transport="serial",
        serial=SerialConfig(port=str(port), **serial),  # type: ignore[arg-type]
    )


async def take(source: AsyncIterator[Reading], n: int, deadline_s: float = DEADLINE_S) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(deadline_s):
        while len(out) < n:
            out.append(await anext(source))
    return out


async def take_until(
    source: AsyncIterator[Reading], done: Callable[[Reading], bool], deadline_s: float = DEADLINE_S
) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(deadline_s):
        while not out or not done(out[-1]):
            out.append(await anext(source))
    return out
