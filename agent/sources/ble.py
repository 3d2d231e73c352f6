"""BLE source: find a wearable, connect, subscribe to its health profiles, and keep doing so.

A supervisor task runs the link: scan (address, name and/or advertised service UUID, all given
criteria must match) → connect within `connect_timeout_s` → subscribe to every configured profile's
characteristic → watch. The watch ends when bleak reports a disconnect, or when the device has been
silent for `lost_after_s` while nominally connected (a stale link is cheaper to rebuild than to
trust). Then: back off with jitter and start again from the scan, so every reconnect re-subscribes
(BlueZ forgets notifications with the link). The daemon raises ``device_lost`` from the silence; a
device that stopped advertising just leaves the source scanning, disconnected, counting
``not_found``: a clean device-lost state, never an exception.

Connecting goes through bleak-retry-connector's `establish_connection` (the default `Connector`),
which already retries the transient BlueZ/ESPHome failures (connection aborted by local, out of
connection slots) with the waits they need; what it finally raises is classified into the
`stats.errors` counters and its own backoff hint (`calculate_backoff_time`) is a lower bound for
ours. Scanner and connector are constructor arguments: tests pass a fake radio whose client raises
bleak's real exception types, with no patching. The finder, the connector and the naming of their
failures live in `agent.sources.ble_radio`.

What the operator is told: a scan that fails (no BlueZ, no adapter, adapter off), a device not
found, or a connection refused is logged when its cause first appears or changes, with what to do,
then every 10 minutes while it lasts (`LinkTrouble`), never once per retry.

Notifications arrive as callbacks on the event loop and are decoded at once (firmware_bridge.gatt);
readings wait in a bounded deque for the consumer. The first reading of each stream after a
reconnect carries Quality.GAP; see `agent.sources.ble_profiles` for channels and quality flags. The
`vitals` row comes once a second whatever the notification rates: made just after a notification that
finds it due (so notifications of one instant share it), or by the watch when none comes.

A profile that notifies all the time (heart_rate, plx, polar_pmd: `Profile.continuous`) and stops while
the device's other profiles go on is a profile, not the device, gone silent: its channels go missing
from the row while the others' values keep coming. After `lost_after_s` it is counted
(`errors["profile_silent"]`), logged naming it, and the link is rebuilt once (a subscription BlueZ
dropped comes back with it); if it stays silent after that the link is kept for the other profiles. The
time each was last heard (`SourceStats.profiles_heard`) gives the daemon's `profile_silent` alarm. Until
2026-11-30 any notification kept the link "alive": an oximeter's SpO2 hid a stopped HR and the reverse,
and nothing told (review of 2026-11-30, finding 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from types import MappingProxyType, TracebackType
from typing import Any

from bleak.backends.device import BLEDevice
from bleak.exc import BleakCharacteristicNotFoundError, BleakError

from agent.config.schema import DeviceConfig
from agent.errors import ConfigError
from agent.link_trouble import LinkTrouble, Tell
from agent.logs import device_name, learn_identifiers
from agent.readings import Reading
from agent.sources.backoff import Backoff, BackoffPolicy
from agent.sources.ble_profiles import Profile, ProfileReadings, profiles_for
from agent.sources.ble_radio import (
    BleakFinder,
    Connector,
    DeviceFinder,
    GattClient,
    MissingProfilesError,
    _backoff_hint,
    classify,
    describe_scan_failure,
    matches,
    retry_connector,
)
from agent.sources.counters import SourceStats
from firmware_bridge.errors import GattDecodeError
from firmware_bridge.gatt.polar_pmd import decode_control_point_response

# Importable from here as before the split (tests import the finder's and connector's helpers).
__all__ = ["BleSource", "classify", "matches", "retry_connector"]

log = logging.getLogger("agent.sources.ble")

QUEUE_READINGS = 4096
SCAN_TIMEOUT_S = 10.0
_ROW_LATE_S = 0.05  # the watch makes a row this late, when no notification made it on time
_SPOT_CHECK_HINT = (
    " (an oximeter that offers only PLX Spot-check, 0x2A5E, is not read: the agent reads PLX Continuous)"
)


class BleSource:
    """Async context manager and async iterator of one BLE device's readings."""

    def __init__(
        self,
        device: DeviceConfig,
        *,
        finder: DeviceFinder | None = None,
        connector: Connector | None = None,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.time,
        scan_timeout_s: float = SCAN_TIMEOUT_S,
    ) -> None:
        if device.ble is None:
            raise ConfigError(f"devices.{device.id}.ble", "transport ble needs a [ble] table")
        self.device = device
        self._name = device_name(device.id)  # what log lines call it
        self.config = device.ble
        self.profiles = profiles_for(self.config.profiles, f"devices.{device.id}.ble.profiles")
        self._finder = finder or BleakFinder()
        self._connector = connector or retry_connector()
        self._backoff = Backoff(backoff)
        self._clock = clock
        self._scan_timeout_s = scan_timeout_s
        self._assembler = ProfileReadings(device.id, self.profiles)
        self._pending: deque[Reading] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._errors: Counter[str] = Counter()
        self._connected = False
        self._ever_connected = False
        self._reconnects = 0
        self._readings = 0
        self._bytes_in = 0
        self._bad_frames = 0
        self._last_data = time.monotonic()
        self._client_generation = 0
        self._trouble = LinkTrouble()  # failed attempts of the current outage, and what was logged
        self._missing_told: set[str] = set()  # configured profiles the device lacked, already logged
        self._link_up_at = time.monotonic()
        self._subscribed = 0  # profiles of the last subscription the device had
        self._continuous: tuple[str, ...] = ()  # its profiles that notify all the time (silence = stopped)
        self._heard: dict[str, float] = {}  # profile → monotonic of its last notification (or link up)
        self._last_notified = -math.inf  # any profile's last notification
        self._rebuilt_for: set[str] = set()  # silent profiles the link was already rebuilt for
        self._row_soon = False  # a vitals row is scheduled for the loop's next turn

    @property
    def stats(self) -> SourceStats:
        return SourceStats(
            connected=self._connected,
            readings=self._readings,
            bytes_in=self._bytes_in,
            bad_frames=self._bad_frames,
            gaps=self._assembler.gaps,
            reconnects=self._reconnects,
            errors=MappingProxyType(self._error_counts()),
            profiles_heard=MappingProxyType(
                {p: self._heard[p] for p in self._continuous if p in self._heard}
            ),
            battery_heard=self._heard.get("battery"),
            rr=self._assembler.rr_validity.seen(time.monotonic()),
        )

    def _error_counts(self) -> dict[str, int]:
        counts = dict(self._errors)
        if self._assembler.bad_rr:  # non-zero kinds only, as the heartbeat lists them
            counts["bad_rr"] = self._assembler.bad_rr
        return counts

    @property
    def battery_percent(self) -> int | None:
        return self._assembler.battery_percent

    async def __aenter__(self) -> BleSource:
        self._task = asyncio.create_task(self._supervise(), name=f"ble {self._name}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def __aiter__(self) -> BleSource:
        return self

    async def __anext__(self) -> Reading:
        # readings wait in a deque and an Event says "more came": a consumer cancelled while it waits
        # (shutdown, wait_for) can never lose a reading already taken off a queue
        while not self._pending:
            task = self._task
            if task is None:
                raise StopAsyncIteration
            if task.done():
                task.result()  # the supervisor never ends on its own; if it did, say why
                raise StopAsyncIteration
            self._arrived.clear()
            waiter = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        self._readings += 1
        return self._pending.popleft()

    async def _supervise(self) -> None:
        while True:
            device = await self._find()
            if device is None:
                await asyncio.sleep(self._backoff.next_delay())
                continue
            client, disconnected = await self._connect(device)
            if client is None:
                continue
            self._connected = True
            if self._ever_connected:
                self._reconnects += 1
                self._assembler.link_restarted()
            self._ever_connected = True
            log.info(
                "%s: BLE connected, %d of %d profile(s)%s",
                self._name,
                self._subscribed,
                len(self.profiles),
                self._trouble.recovered(),
            )
            try:
                await self._watch(disconnected)
            finally:
                self._connected = False
                self._client_generation += 1  # late notifications of this client are ignored
                await self._disconnect_quietly(client)
            await asyncio.sleep(self._backoff.next_delay())

    async def _find(self) -> BLEDevice | None:
        try:
            found = await self._finder.find(self.config, self._scan_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # adapter gone, BlueZ restarting: keep trying
            self._errors["scan_failed"] += 1
            self._tell("cannot scan for BLE devices", describe_scan_failure(exc))
            return None
        if found is None:
            self._errors["not_found"] += 1
            self._tell(f"not found in a {self._scan_timeout_s:.0f} s scan", self._not_found_hint())
            return None
        # bleak and its retry connector name the device by both in their errors; the config may not
        learn_identifiers({seen: f"{self._name}:ble" for seen in (found.address, found.name) if seen})
        return found

    def _not_found_hint(self) -> str:
        """What to check when the scan finds nothing: the criteria's keys, never their values (an address
        or name is an identifier: the log's redactor would show its pseudonym where the value belongs,
        which nobody can check), and where the operator sees which device this is."""
        config = self.config
        criteria = {"address": config.address, "name": config.name, "service_uuid": config.service_uuid}
        keys = [f"ble.{key}" for key, value in criteria.items() if value] or [f"ble.{k}" for k in criteria]
        wanted = f"{', '.join(keys[:-1])} and {keys[-1]} are" if len(keys) > 1 else f"{keys[0]} is"
        return (
            f"is it on, in range and not held by another gateway or phone, and {wanted} right in this"
            " device's [[devices]] entry of the configuration file? (the log shows no identifiers;"
            f" `edge-agent status --config FILE` says which device {self._name} is)"
        )

    def _tell(self, what: str, cause: str) -> None:
        """Log a link problem when it is news for this outage (see `LinkTrouble`)."""
        tell = self._trouble.failed(f"{what}: {cause}")
        if tell is Tell.QUIET:
            return
        again = " still" if tell is Tell.REMINDER else ""
        log.warning(
            "%s:%s %s: %s; retrying every %.0f s at most, the other devices are not affected",
            self._name,
            again,
            what,
            cause,
            self._backoff.policy.max_s,
        )

    async def _connect(self, device: BLEDevice) -> tuple[GattClient | None, asyncio.Event]:
        disconnected = asyncio.Event()
        client: GattClient | None = None
        generation = self._client_generation
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                client = await self._connector(device, disconnected.set)
                await self._subscribe(client, generation)
        except asyncio.CancelledError:
            if client is not None:
                await self._disconnect_quietly(client)
            raise
        except Exception as exc:  # bleak backends raise BleakError, TimeoutError, EOFError, KeyError...
            kind = classify(exc)
            self._errors[kind] += 1
            delay = self._backoff.next_delay(at_least=_backoff_hint(exc))
            log.debug("%s: BLE connect failed (%s: %s); retry in %.1f s", self._name, kind, exc, delay)
            self._tell(f"found, but the BLE connection failed ({kind})", f"{type(exc).__name__}: {exc}")
            if client is not None:
                await self._disconnect_quietly(client)
            await asyncio.sleep(delay)
            return None, disconnected
        self._last_data = time.monotonic()
        return client, disconnected

    async def _subscribe(self, client: GattClient, generation: int) -> None:
        """Subscribe to every configured profile the device has. One it lacks (bleak's "characteristic
        not found") is left out and told once, and the others work: until 2026-11-30 it failed the
        whole connection, forever, and the HR of a strap configured with plx too was lost (audit
        finding 6). A device with none of them is a configuration error, retried like a link one."""
        present: list[Profile] = []
        for profile in self.profiles:
            try:
                await self._subscribe_one(client, profile, generation)
            except BleakCharacteristicNotFoundError as exc:
                self._lacks(profile, exc)
                continue
            present.append(profile)
        if not any(p.required for p in present) and any(p.required for p in self.profiles):
            names = ", ".join(p.name for p in self.profiles if p.required)
            raise MissingProfilesError(
                f"the device has none of the configured profiles ({names}); check devices.<id>.ble.profiles"
            )
        self._assembler.use(present)
        self._subscribed = len(present)
        self._continuous = tuple(p.name for p in present if p.continuous)
        now = time.monotonic()
        for name in self._continuous:  # silent since the link came up, if never heard
            self._heard.setdefault(name, now)
        self._link_up_at = now

    async def _subscribe_one(self, client: GattClient, profile: Profile, generation: int) -> None:
        callback = self._callback(profile, generation)
        if profile.control_point:  # indications on first, or the start answer is lost
            await client.start_notify(profile.control_point, self._control_callback(profile, generation))
            await client.start_notify(profile.characteristic, callback)
            await client.write_gatt_char(profile.control_point, profile.start_command, response=True)
            return
        if profile.required:
            await client.start_notify(profile.characteristic, callback)
            return
        try:  # battery: read once, then notifications if the device offers them
            callback(None, await client.read_gatt_char(profile.characteristic))
            await client.start_notify(profile.characteristic, callback)
        except BleakError as exc:
            log.debug("%s: optional %s not available: %s", self._name, profile.name, exc)

    def _lacks(self, profile: Profile, exc: BleakCharacteristicNotFoundError) -> None:
        """Count a configured profile the device does not have; log it the first time."""
        self._errors["profile_missing"] += 1
        if profile.name in self._missing_told:
            return
        self._missing_told.add(profile.name)
        channels = ", ".join(profile.channels) or profile.stream
        log.warning(
            "%s: the device has no %s (%s): profile %r left out, so %s stay missing; the device's other"
            " profiles are read. Check devices.<id>.ble.profiles%s",
            self._name,
            profile.title or profile.name,
            exc.char_specifier,
            profile.name,
            channels,
            _SPOT_CHECK_HINT if profile.name == "plx" else "",
        )

    def _callback(self, profile: Profile, generation: int) -> Callable[[Any, bytearray], None]:
        def on_value(_sender: Any, data: bytearray) -> None:
            if generation != self._client_generation:
                return
            self._on_value(profile, bytes(data))

        return on_value

    def _control_callback(self, profile: Profile, generation: int) -> Callable[[Any, bytearray], None]:
        def on_answer(_sender: Any, data: bytearray) -> None:
            if generation != self._client_generation:
                return
            try:
                answer = decode_control_point_response(bytes(data))
            except GattDecodeError as exc:
                self._bad_frames += 1
                log.debug("%s: %s", self._name, exc)
                return
            if not answer.ok:
                self._errors[f"{profile.name}_refused"] += 1
                log.warning("%s: %s start refused: %s", self._name, profile.name, answer.status)

        return on_answer

    def _on_value(self, profile: Profile, data: bytes) -> None:
        self._bytes_in += len(data)
        monotonic = time.monotonic()
        self._last_data = monotonic
        self._last_notified = monotonic
        self._heard[profile.name] = monotonic
        self._rebuilt_for.discard(profile.name)
        try:
            update = profile.decode(data)
            readings = self._assembler.take(profile, update, self._clock(), monotonic)
        except ValueError as exc:  # GattDecodeError, or values no reading can hold: count, go on
            self._bad_frames += 1
            log.debug("%s: %s", self._name, exc)
            return
        self._backoff.reset()  # data flows: the link has proved itself
        self._push(readings)
        if not self._row_soon and self._assembler.row_due(monotonic):
            # on the loop's next turn: notifications of one instant (PLX and HR of one beat) share the row
            self._row_soon = True
            asyncio.get_running_loop().call_soon(self._emit_row)

    def _emit_row(self) -> None:
        self._row_soon = False
        row = self._assembler.row(self._clock(), time.monotonic())
        if row is not None:
            self._push([row])

    def _push(self, readings: list[Reading]) -> None:
        for reading in readings:
            if len(self._pending) >= QUEUE_READINGS:  # the consumer stalled: drop, and say so
                self._errors["overflow"] += 1
                continue
            self._pending.append(reading)
        if readings:
            self._arrived.set()

    async def _watch(self, disconnected: asyncio.Event) -> None:
        """Make the vitals rows no notification made; return when the link drops, goes silent for
        `lost_after_s`, or a continuous profile does while the others talk (once per silence)."""
        limit = self.device.lost_after_s
        while True:
            now = time.monotonic()
            if self._assembler.row_due(now) and not self._row_soon:
                self._emit_row()
            if self._last_data + limit - now <= 0:
                self._errors["silent"] += 1
                log.warning("%s: BLE link silent for %.0f s; reconnecting", self._name, limit)
                return
            if (silent := self._silent_profile(now, limit)) is not None:
                self._errors["profile_silent"] += 1
                self._rebuilt_for.add(silent.name)
                log.warning(
                    "%s: no %s notification for %.0f s while the device's other profiles notify, so %s"
                    " are missing; rebuilding the link (once: if it stays silent the link is kept for the"
                    " others, and the profile_silent alarm stays)",
                    self._name,
                    silent.title or silent.name,
                    limit,
                    ", ".join(silent.channels) or silent.stream,
                )
                return
            # wake for the next row (a notification usually makes it first), or each second: one overdue
            # and not made has no fresh value, and the next notification makes it
            to_row = self._assembler.next_row - now + _ROW_LATE_S
            wake = min(self._last_data + limit - now, to_row if to_row > 0 else 1.0, 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake):
                    await disconnected.wait()
            if disconnected.is_set():
                self._errors["dropped"] += 1
                log.warning("%s: BLE device disconnected; reconnecting", self._name)
                return

    def _silent_profile(self, now: float, limit: float) -> Profile | None:
        """A continuous profile silent for `limit` on this link while another notified within it, that
        the link was not rebuilt for yet."""
        if now - self._last_notified >= limit:
            return None  # the whole device is silent: the link check above is for that
        for profile in self.profiles:
            if profile.name not in self._continuous or profile.name in self._rebuilt_for:
                continue
            since = max(self._heard.get(profile.name, self._link_up_at), self._link_up_at)
            if now - since >= limit:
                return profile
        return None

    async def _disconnect_quietly(self, client: GattClient) -> None:
        try:
            async with asyncio.timeout(5.0):
                await client.disconnect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # already gone: nothing to do
            log.debug("%s: disconnect: %r", self._name, exc)
