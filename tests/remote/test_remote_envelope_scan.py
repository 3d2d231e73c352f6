"""With a signing key configured, the envelope is scanned, not parsed: nothing but its two strings is built
before the signature is checked. Before, `json.loads` built whatever the payload held, so 16 MB of `{}`
on cmd/models/install (whose cap is a bundle's) cost about 420 MB before the signature was checked."""

from __future__ import annotations

import codecs
import json
import tracemalloc

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.remote.envelope import CommandRefusedError, open_envelope, sign_command

ROOT = "edge/lab/gw-1"
KEY = Ed25519PrivateKey.generate()


def signed(nonce: str = "n" * 16) -> bytes:
    return sign_command(KEY, ROOT, "status", {"x": [1, {"y": "é"}]}, issued_at=100.0, nonce=nonce)


def code_of(payload: bytes) -> str:
    with pytest.raises(CommandRefusedError) as info:
        open_envelope(payload, KEY.public_key())
    return info.value.code


def spellings() -> list[bytes]:
    """The same envelope as other JSON writers may spell it: all open to the same body."""
    doc = json.loads(signed())
    reordered = json.dumps({"signature": doc["signature"], "signed": doc["signed"]})
    escaped = json.dumps(doc).replace('"signed"', '"\\u0073igned"').replace("/", "\\/")
    return [
        json.dumps(doc, indent=2).encode(),
        b"\r\n\t " + json.dumps(doc, separators=(",", ":")).encode() + b" \n",
        reordered.encode(),
        escaped.encode(),
        json.dumps(doc, ensure_ascii=False).encode(),
        codecs.BOM_UTF8 + json.dumps(doc).encode(),
        json.dumps(doc).encode("utf-16"),
    ]


@pytest.mark.parametrize("payload", spellings())
def test_an_envelope_opens_in_any_json_spelling(payload: bytes) -> None:
    body, was_signed = open_envelope(payload, KEY.public_key())
    assert was_signed and body["args"] == {"x": [1, {"y": "é"}]}


REFUSED = {
    b"": "bad_request",
    b"\xff not json": "bad_request",
    b"[]": "bad_request",
    b'"signed"': "bad_request",
    b"{}": "bad_signature",  # no envelope: an unsigned command
    b'{"command": "status", "issued_at": 1}': "bad_signature",
    b'{"signed": 5, "signature": "AAAA"}': "bad_request",
    b'{"signed": "{}"}': "bad_request",
    b'{"signed": "{}", "signature": "AAAA"': "bad_request",  # truncated
    b'{"signed": "{}", "signature": "AAAA"} x': "bad_request",
    b'{"signed": "{}" "signature": "AAAA"}': "bad_request",
    b'{"signed": "a\x01b", "signature": "AAAA"}': "bad_request",  # a control character in a string
    b'{"signed": "{}", "signature": "AAAA"}': "bad_signature",
    b'{"signed": "\\ud800", "signature": "AAAA"}': "bad_signature",  # cannot be the UTF-8 that was signed
}


@pytest.mark.parametrize("payload", list(REFUSED))
def test_what_is_not_a_signed_envelope_is_refused_with_the_codes_it_had(payload: bytes) -> None:
    assert code_of(payload) == REFUSED[payload]


def test_an_envelope_with_other_members_is_refused() -> None:
    doc = json.loads(signed())
    assert code_of(json.dumps({**doc, "note": "x"}).encode()) == "bad_signature"  # was accepted


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a": [' + b"{}," * 400_000 + b"{}]}",  # 1.2 MB: 400,000 dicts to a parser
        b'{"signed": "x", "signature": "AAAA", "pad": [' + b"1.5," * 300_000 + b"1.5]}",
        b"[" + b'"ab",' * 240_000 + b'"ab"]',
    ],
)
def test_what_is_not_an_envelope_is_refused_before_anything_is_built(payload: bytes) -> None:
    tracemalloc.start()
    try:
        code_of(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * len(payload)  # the payload as text, at most; a parse built 20-30 MB here
