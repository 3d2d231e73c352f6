"""The log handler's safety net: identifiers of the running config never reach a log line, whatever
the logger, letter case or traceback; their pseudonyms are shown instead."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent.config.schema import BleConfig, DeviceConfig, ReplayConfig, SerialConfig
from agent.logs import (
    configure_logging,
    device_name,
    learn_identifiers,
    redact_identifiers,
    scrub_identifiers,
)
from agent.privacy import Pseudonymizer, stand_ins

DEVICES = (
    DeviceConfig(
        id="bed-1",
        kind="wearable",
        transport="serial",
        patient="MRN-4711",
        serial=SerialConfig(port="/dev/ttyX9"),
    ),
    DeviceConfig(id="bed-10", kind="wearable", transport="ble", ble=BleConfig(address="AA:BB:CC:DD:EE:FF")),
    DeviceConfig(id="p2", kind="equipment", transport="simulator"),
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG", json_lines=True)
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    redact_identifiers({})
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_identifiers_are_replaced_by_pseudonyms_in_messages_and_tracebacks(captured: io.StringIO) -> None:
    pseudonym = Pseudonymizer(b"k" * 32)
    names = stand_ins(DEVICES, pseudonym)
    redact_identifiers(names)
    log = logging.getLogger("agent.sources.any")
    log.warning("%s: serial port %s open", "bed-1", "/dev/ttyX9")
    log.info("BED-10 connected to aa:bb:cc:dd:ee:ff for patient mrn-4711")  # case variants, no args
    try:
        raise OSError("cannot open /dev/ttyX9 for bed-10")
    except OSError:
        log.exception("failed")
    log.info("p2 is too short to redact safely: up2date")

    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    text = json.dumps(lines).lower()
    for identifier in ("bed-1", "bed-10", "mrn-4711", "/dev/ttyx9", "aa:bb:cc:dd:ee:ff"):
        assert identifier not in text, identifier
    bed1, bed10 = pseudonym("bed-1"), pseudonym("bed-10")
    assert lines[0]["message"] == f"{bed1}: serial port {bed1}:port open"
    assert lines[1]["message"] == f"{bed10} connected to {bed10}:ble for patient {pseudonym('MRN-4711', 'p')}"
    assert f"cannot open {bed1}:port for {bed10}" in lines[2]["exception"]  # longest id first
    assert lines[3]["message"] == "p2 is too short to redact safely: up2date"


def test_without_registered_identifiers_lines_are_untouched(captured: io.StringIO) -> None:
    logging.getLogger("agent").info("bed-1 %d", 5)
    assert json.loads(captured.getvalue())["message"] == "bed-1 5"


def test_json_lines_carry_utc_times_with_milliseconds_as_the_payloads_do(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # a local zone must not leak into the line
    time.tzset()
    try:
        before = time.time()
        logging.getLogger("agent").info("tick")
        stamp = json.loads(captured.getvalue())["time"]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    logged = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    assert before - 0.002 <= logged <= time.time() + 0.002


def test_mac_addresses_are_hidden_in_every_spelling_and_other_hex_is_not(captured: io.StringIO) -> None:
    pseudonym = Pseudonymizer(b"k" * 32)
    redact_identifiers(stand_ins(DEVICES, pseudonym))  # bed-10's address is AA:BB:CC:DD:EE:FF
    log = logging.getLogger("agent.sources.any")
    log.warning("device 'dev_AA_BB_CC_DD_EE_FF' not found; aa-bb-cc-dd-ee-ff")  # bed-10's, as BlueZ writes it
    log.warning("met A4:C1:38:12:34:56 and a4_c1_38_12_34_56 at /org/bluez/hci0/dev_A4_C1_38_12_34_56/char")
    kept = "uuid 0000180d-0000-1000-8000-00805f9b34fb at 19:12:03, 2026-11-30, 0x2A5E, 12:34:56:78, ab:cd"
    log.warning(kept)

    messages = [json.loads(line)["message"] for line in captured.getvalue().splitlines()]
    ble = f"{pseudonym('bed-10')}:ble"
    assert messages[0] == f"device 'dev_{ble}' not found; {ble}"
    assert (
        messages[1] == "met <mac> and <mac> at /org/bluez/hci0/dev_<mac>/char"
    )  # in no config: still hidden
    assert messages[2] == kept


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("mac A4C138123456", "mac A4C138123456"),  # no separators: not masked
        ("file rec_26_11_30_12_34_56.csv", "file rec_<mac>.csv"),  # six separated pairs: masked
        ("on 30-11-26-20-25-15", "on <mac>"),
        ("hex 00:1a:2b:3c:4d:5e:6f:70", "hex <mac>:6f:70"),
    ],
)
def test_what_docs_security_says_the_mac_masking_does(text: str, logged: str) -> None:
    """docs/security.md said "every MAC address in any spelling" (review of the fixes): it says now
    which spellings are masked, and which other texts are masked with them."""
    redact_identifiers({})
    assert scrub_identifiers(text) == logged


def test_learnt_identifiers_are_hidden_until_the_next_config(captured: io.StringIO) -> None:
    redact_identifiers({"bed-1": "d-one"})
    learn_identifiers({"Polar H10 8C4E2F11": "d-one:ble", "A4:C1:38:12:34:56": "d-one:ble"})
    log = logging.getLogger("agent.sources.ble")
    log.warning("Polar H10 8C4E2F11 - a4-c1-38-12-34-56: failed")
    redact_identifiers({"bed-1": "d-one"})  # a reload: the sources find their devices again
    log.warning("Polar H10 8C4E2F11 - a4-c1-38-12-34-56: failed")
    messages = [json.loads(line)["message"] for line in captured.getvalue().splitlines()]
    assert messages == ["d-one:ble - d-one:ble: failed", "Polar H10 8C4E2F11 - <mac>: failed"]


def test_device_name_is_the_pseudonym_whatever_the_length_of_the_id() -> None:
    pseudonym = Pseudonymizer(b"k" * 32)
    short = DeviceConfig(id="12", kind="wearable", transport="simulator")
    assert device_name("12") == "12"  # nothing registered: tools and tests outside the daemon
    redact_identifiers(stand_ins([*DEVICES, short], pseudonym))
    try:
        assert device_name("12") == pseudonym("12") and device_name("p2") == pseudonym("p2")
        assert device_name("not-configured") == "<redacted>"
    finally:
        redact_identifiers({})


def test_a_short_id_is_hidden_as_a_stream_ids_device_and_numbers_are_left_alone(
    captured: io.StringIO,
) -> None:
    pseudonym = Pseudonymizer(b"k" * 32)
    short = DeviceConfig(id="12", kind="wearable", transport="simulator")
    redact_identifiers(stand_ins([short], pseudonym))
    logging.getLogger("agent").warning(
        "12/vitals: wall_time must be finite; 12 failed attempt(s), 19:12, 2026/12/01"
    )
    message = json.loads(captured.getvalue())["message"]
    assert (
        message
        == f"{pseudonym('12')}/vitals: wall_time must be finite; 12 failed attempt(s), 19:12, 2026/12/01"
    )


def test_a_replay_recording_path_is_masked_as_written_and_through_its_symlink(
    captured: io.StringIO, tmp_path: Path
) -> None:
    real = tmp_path / "recordings" / "MRN-0055555_Kowalski_Anna"
    real.mkdir(parents=True)
    linked = tmp_path / "current"
    linked.symlink_to(real)
    device = DeviceConfig(id="bed-6", kind="wearable", transport="replay", replay=ReplayConfig(linked, 0.0))
    pseudonym = Pseudonymizer(b"k" * 32)
    redact_identifiers(stand_ins([device], pseudonym))
    log = logging.getLogger("agent.sources.any")
    try:
        (real / "readings-000003.jsonl").open()  # raises: its message quotes the path
    except OSError:
        log.exception("replay of %s failed", linked)

    (line,) = [json.loads(line) for line in captured.getvalue().splitlines()]
    text = json.dumps(line)
    assert "Kowalski" not in text and str(tmp_path) not in text, text
    ref = pseudonym("bed-6")
    assert line["message"] == f"replay of {ref}:recording failed"
    assert f"{ref}:recording/readings-000003.jsonl" in line["exception"]
