"""The log's rate limit keeps the remote-command audit trail: a flood of one command's lines never hides
another command's accepted or refused line, and what it held back is told in one line when its period
ends. The real handler (`configure_logging`) and the real `RemoteCommands`, fed signed commands."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config.loader import parse_config
from agent.log_rate import RateLimit
from agent.logs import configure_logging, flush_suppressed, redact_identifiers
from agent.remote import sign_command
from agent.remote.commands import RemoteCommands
from agent.uplink.mqtt import Command
from agent.uplink.topics import Topics
from tests.remote.conftest import BASE, ROOT

PERIOD_S = 1.0  # the limit's period in these tests (60 s in the agent)
FORGED_LINE = (
    "remote command reload refused: bad_signature (the signature does not verify with the configured key)"
)


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, RateLimit]]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO", json_lines=True)
    handler = root.handlers[0]
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    (limit,) = [f for f in handler.filters if isinstance(f, RateLimit)]
    limit.period_s = PERIOD_S
    yield stream, limit
    redact_identifiers({})
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def run(tmp_path: Path, key: Ed25519PrivateKey, payloads: list[tuple[str, bytes]]) -> list[str]:
    """Each (command, payload) through `RemoteCommands`, one at a time; the answers' codes (or "ok")."""
    public = tmp_path / "ops.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cfg = parse_config({**BASE, "remote": {"enabled": True, "public_key_file": "ops.pub"}}, base_dir=tmp_path)
    answers: list[str] = []
    remote = RemoteCommands(
        cfg,
        Topics("edge", "lab", "gw-1"),
        tmp_path,
        str,
        check_reload=lambda **_: [],
        request_reload=lambda: None,
    )

    def respond(_command: Command, payload: bytes, *, authenticated: bool) -> None:
        doc = json.loads(payload)
        answers.append("ok" if doc["ok"] else doc["error"]["code"])

    remote.bind(respond, dict)

    async def scenario() -> None:
        for name, payload in payloads:
            remote.submit(Command(f"{ROOT}/cmd/{name}", payload, "replies/ops", b"1"))
            async with asyncio.timeout(5):
                while remote._tasks:  # one at a time: none is answered "busy"
                    await asyncio.sleep(0.001)
        await remote.close()

    asyncio.run(scenario())
    return answers


def messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


def test_a_flood_of_status_lines_does_not_hide_a_reload(
    tmp_path: Path, captured: tuple[io.StringIO, RateLimit]
) -> None:
    stream, limit = captured
    key = Ed25519PrivateKey.generate()
    status = [("status", sign_command(key, ROOT, "status")) for _ in range(25)]
    stale = [("status", sign_command(key, ROOT, "status", issued_at=time.time() - 600)) for _ in range(20)]
    forged = ("reload", sign_command(Ed25519PrivateKey.generate(), ROOT, "reload"))
    answers = run(tmp_path, key, [*status, ("reload", sign_command(key, ROOT, "reload")), *stale, forged])
    assert answers == ["ok"] * 26 + ["stale"] * 20 + ["bad_signature"]

    lines = messages(stream)
    assert lines.count("remote command status accepted") == limit.burst  # 20 a period, 5 held back
    assert "remote command reload accepted" in lines  # the same template as status: hidden before
    stale_line = "remote command status refused: stale (issued_at is more than 60 s from the gateway clock)"
    assert lines.count(stale_line) == limit.burst
    assert FORGED_LINE in lines  # the 41st refused line

    # The period ends with no further line: a timer tells what was held back.
    time.sleep(PERIOD_S + 0.5)
    summaries = [line for line in messages(stream) if "suppressed" in line]
    assert summaries == [
        "5 similar line(s) suppressed in 1 s by the log's rate limit; "
        "the last: remote command status accepted"
    ]
    assert limit.suppressed == 5


def test_other_loggers_are_limited_by_template_and_told_once(
    captured: tuple[io.StringIO, RateLimit],
) -> None:
    stream, limit = captured
    log = logging.getLogger("agent.sources.test")
    for i in range(limit.burst + 3):
        log.warning("frame %d dropped", i)  # one kind, whatever the arguments
    assert len(messages(stream)) == limit.burst
    time.sleep(PERIOD_S + 0.1)  # the period ended: told (by the timer, or before the next line)
    log.warning("frame %d dropped", 99)
    lines = messages(stream)
    assert lines[limit.burst :] == [
        "3 similar line(s) suppressed in 1 s by the log's rate limit; the last: frame 22 dropped",
        "frame 99 dropped",
    ]
    time.sleep(0.2)
    assert len(messages(stream)) == limit.burst + 2  # told once


def test_what_is_held_back_when_the_process_ends_is_told(captured: tuple[io.StringIO, RateLimit]) -> None:
    stream, limit = captured
    limit.period_s = 60.0  # the agent's: no period ends within the test
    log = logging.getLogger("agent.remote.commands")
    for _ in range(limit.burst + 2):
        log.info("remote command %s accepted", "status")
    flush_suppressed()  # what `edge-agent` does as it returns
    assert messages(stream)[limit.burst :] == [
        "2 similar line(s) suppressed in 1 s by the log's rate limit; "
        "the last: remote command status accepted"
    ]


def test_refusals_over_the_answer_budget_are_logged_and_summed_up_once(
    tmp_path: Path, captured: tuple[io.StringIO, RateLimit]
) -> None:
    """Review finding 8: the answer budget decides answers only; every refusal reaches the log, whose
    rate limit alone sums up what it held back (the budget had its own summary of the same lines)."""
    stream, limit = captured
    key = Ed25519PrivateKey.generate()
    forged = [("reload", sign_command(Ed25519PrivateKey.generate(), ROOT, "reload")) for _ in range(30)]
    answers = run(tmp_path, key, forged)
    burst = 10  # UNAUTHENTICATED: 10 at once, then 1 a second
    assert burst <= len(answers) <= burst + 2 and set(answers) == {"bad_signature"}

    time.sleep(PERIOD_S + 0.5)  # the rate limit's period ends: its timer tells what it held back
    lines = messages(stream)
    assert lines.count(FORGED_LINE) == limit.burst
    told = [line for line in lines if "answer budget" in line]
    assert len(told) == 1 and told[0].startswith("remote: refused commands arrive faster than the answer")
    summaries = [line for line in lines if "suppressed" in line or "command(s) not answered" in line]
    assert summaries == [
        f"10 similar line(s) suppressed in 1 s by the log's rate limit; the last: {FORGED_LINE}"
    ]


def test_closing_a_limit_cancels_its_pending_report() -> None:
    """configure_logging replaces the handler a limit reports to, and a test's ends: the report armed for
    the end of the period must not fire into a stream that may be closed by then."""
    reported: list[logging.LogRecord] = []
    limit = RateLimit(burst=1, period_s=0.2, report=reported.append)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "again", None, None)
    assert [limit.filter(record) for _ in range(3)] == [True, False, False]
    limit.close()
    time.sleep(0.4)
    assert reported == []
    limit.flush(everything=True)  # an explicit flush still tells what was held back
    assert len(reported) == 1 and "2 similar line(s)" in reported[0].getMessage()


def test_a_closed_limit_arms_no_report_for_lines_held_after_it() -> None:
    """A closed limit may still see lines (its handler stays on the root logger until the next
    configure_logging; in the test suite, the next tests' lines): they must not arm a report either,
    which fired into a closed capture stream in a fresh-clone run."""
    reported: list[logging.LogRecord] = []
    limit = RateLimit(burst=1, period_s=0.2, report=reported.append)
    limit.close()
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "again", None, None)
    assert [limit.filter(record) for _ in range(3)] == [True, False, False]
    time.sleep(0.4)
    assert reported == []
    limit.flush(everything=True)  # an explicit flush still tells what was held back
    assert len(reported) == 1 and "2 similar line(s)" in reported[0].getMessage()


def test_one_flapping_device_does_not_hide_another_devices_line(
    captured: tuple[io.StringIO, RateLimit],
) -> None:
    stream, limit = captured
    redact_identifiers({"bed-12-strap": "d-aaaa", "pump-3": "d-bbbb"})
    log = logging.getLogger("agent.sources.test")
    for _ in range(limit.burst + 5):
        log.warning("%s: disconnected; reconnecting", "d-aaaa")  # the flapping strap
    log.warning("%s: disconnected; reconnecting", "d-bbbb")  # the pump's one line, same template
    for i in range(3):
        log.warning("frame %s dropped", str(i))  # an argument that names no device: one kind, as before
    lines = messages(stream)
    assert lines.count("d-aaaa: disconnected; reconnecting") == limit.burst
    assert "d-bbbb: disconnected; reconnecting" in lines
    assert lines[-3:] == ["frame 0 dropped", "frame 1 dropped", "frame 2 dropped"]
    time.sleep(PERIOD_S + 0.5)
    summaries = [line for line in messages(stream) if "suppressed" in line]
    assert summaries == [
        "5 similar line(s) suppressed in 1 s by the log's rate limit; "
        "the last: d-aaaa: disconnected; reconnecting"
    ]
