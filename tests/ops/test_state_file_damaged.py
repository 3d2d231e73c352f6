"""A damaged plaintext pipeline.json: the agent starts from a fresh state, the file is kept aside and the
log names it. Before, bytes that are not UTF-8, absurd nesting or a huge integer raised out of
`read_state` (the agent could not start, and systemd restarted it into the same file), and a truncated
file was dropped silently and overwritten by the next save."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.state import write_json
from agent.state_file import read_state

DAMAGED = {
    "not_utf8": b"\xff\xfe\x00garbage",
    "truncated": b'{"detectors": {"hr": {"baseline": [72.1',
    "empty": b"",
    "nested": b"[" * 100_000 + b"]" * 100_000,
    "huge_int": b'{"n": ' + b"9" * 5000 + b"}",
    "not_an_object": b"[1, 2]",
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_plaintext_state_is_set_aside_and_logged(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pipeline.json"
    path.write_bytes(DAMAGED[name])
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        assert read_state(path, None) is None
    assert (tmp_path / "pipeline.json.unreadable").read_bytes() == DAMAGED[name]  # kept, byte for byte
    assert not path.exists()
    assert "pipeline.json" in caplog.text and "fresh state" in caplog.text


def test_a_good_or_missing_plaintext_state_is_read_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pipeline.json"
    with caplog.at_level(logging.WARNING):
        assert read_state(path, None) is None
        write_json(path, {"detectors": {}})
        assert read_state(path, None) == {"detectors": {}}
    assert not caplog.records and not (tmp_path / "pipeline.json.unreadable").exists()
