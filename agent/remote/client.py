"""Operator-side command line: sign a command, send it over MQTT v5 and print the gateway's response.

    python -m agent.remote.client send --url mqtt://broker:1883 --root edge/lab/gw-1 --key ops.key status
    python -m agent.remote.client send ... models/install --bundle build/ecg-beat --args '{"activate": true}'
    python -m agent.remote.client sign --root edge/lab/gw-1 --key ops.key status > cmd.json  # mosquitto_pub

`send` publishes on `{root}/cmd/<name>` (QoS 1) with a fresh ResponseTopic, named in the signed body's
`reply_to` so that the gateway answers there only, and CorrelationData, waits for the first answer on
that topic carrying that correlation data and prints it (others are told on stderr, never merged);
exit status 0 if it says ok, 1 if not, 2 on timeout or when a file or option cannot be used (one line
naming it: a missing key, an invalid card). The private key stays on the operator's machine; this
module is never used by the agent.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes

from agent.errors import ModelError
from agent.remote.bundles import pack_bundle
from agent.remote.envelope import sign_command
from agent.uplink.connection import new_properties


class ClientError(Exception):
    """Something the operator gave cannot be used: one line naming the file or option (no traceback)."""


def _file_problem(exc: OSError, path: Path) -> str:
    return f"{exc.filename or path}: {exc.strerror or exc}"


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ClientError(f"--key {_file_problem(exc, path)}") from None
    except (ValueError, TypeError) as exc:
        raise ClientError(f"--key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ClientError(f"--key {path}: not an Ed25519 private key")
    return key


def build_payload(args: argparse.Namespace, reply_to: str | None = None) -> bytes:
    try:
        command_args = json.loads(args.args) if args.args else {}
    except json.JSONDecodeError as exc:
        raise ClientError(f"--args is not JSON ({exc})") from None
    if not isinstance(command_args, dict):
        raise ClientError("--args must be a JSON object, e.g. '{\"activate\": true}'")
    if args.bundle is not None:
        try:
            command_args["bundle"] = pack_bundle(args.bundle)
        except OSError as exc:
            raise ClientError(f"--bundle {_file_problem(exc, args.bundle)}") from None
        except (ModelError, ValueError) as exc:  # an invalid card, signature.json not JSON
            raise ClientError(f"--bundle {args.bundle / 'card.json'}: {exc}") from None
    return sign_command(load_private_key(args.key), args.root, args.command, command_args, reply_to=reply_to)


def reply_topic(args: argparse.Namespace) -> str:
    """A fresh topic for one answer, under `--reply-prefix`."""
    return f"{args.reply_prefix}/{uuid.uuid4().hex}"


def send(args: argparse.Namespace, payload: bytes, reply_topic: str) -> dict[str, Any] | None:
    """Publish `payload` with `reply_topic` as its ResponseTopic (the one its body's `reply_to` names)
    and wait for the answer: the first one on `reply_topic` with this request's CorrelationData that
    is not a refusal of an unverified command (the gateway answers there only commands whose signature
    verified). Any other answer carrying that CorrelationData is not taken: it is told on stderr, and a
    refusal of an unverified command (on `{root}/cmd/response`: a wrong key, or someone else's copy of
    this request) is returned only if no other answer came within the timeout."""
    url = urlsplit(args.url)
    correlation = uuid.uuid4().bytes
    taken: list[dict[str, Any]] = []
    unverified: list[dict[str, Any]] = []
    got = threading.Event()
    ready = threading.Event()
    refusals = f"{args.root}/cmd/response"

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if getattr(msg.properties, "CorrelationData", None) != correlation:
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = None
        refusal = isinstance(doc, dict) and (msg.topic == refusals or _code(doc) in UNVERIFIED_CODES)
        if msg.topic == reply_topic and not refusal and not taken and isinstance(doc, dict):
            taken.append(doc)  # the first: never merged with, nor replaced by, a later one
            got.set()
            return
        if refusal:
            unverified.append(doc)
        print(
            f"warning: another answer with this request's correlation data on {msg.topic}, not taken "
            f"({_gist(doc)}): {_WHY_OTHER[refusal]}",
            file=sys.stderr,
        )

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if url.scheme == "mqtts":
        try:
            client.tls_set(ca_certs=args.cafile, certfile=args.cert, keyfile=args.cert_key)
        except (OSError, ValueError) as exc:
            raise ClientError(f"--cafile/--cert/--cert-key: {exc}") from None
    if args.username:
        try:
            password = Path(args.password_file).read_text().strip() if args.password_file else None
        except OSError as exc:
            raise ClientError(f"--password-file {_file_problem(exc, Path(args.password_file))}") from None
        client.username_pw_set(args.username, password)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    try:
        client.connect(url.hostname or "localhost", url.port or (8883 if url.scheme == "mqtts" else 1883))
    except OSError as exc:
        raise ClientError(f"--url {args.url}: cannot connect ({exc.strerror or exc})") from None
    client.loop_start()
    try:
        client.subscribe([(reply_topic, 1), (refusals, 1)])
        if not ready.wait(args.timeout):
            return None
        props = new_properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        client.publish(f"{args.root}/cmd/{args.command}", payload, qos=1, properties=props)
        if got.wait(args.timeout):
            return taken[0]
        if unverified:
            print(
                f"warning: no other answer came; the one below refuses a command the gateway could not "
                "verify that carried this request's correlation data (on "
                f"{refusals}: the wrong --key, or someone else's copy of this request)",
                file=sys.stderr,
            )
            return unverified[0]
        return None
    finally:
        client.disconnect()
        client.loop_stop()


# Refusals only a command whose signature never verified gets: an agent before 2026-12-01 answered them
# on the request's ResponseTopic, so an insider's `{}` copy of a request put one there.
UNVERIFIED_CODES = frozenset({"bad_signature"})
_WHY_OTHER = {
    False: "the gateway answers a command once, so it is not the gateway's answer to this request",
    True: "the gateway refused a command it could not verify that carried this correlation data "
    "(the wrong --key, or someone else's copy of this request)",
}


def _code(doc: dict[str, Any]) -> Any:
    error = doc.get("error")
    return error.get("code") if isinstance(error, dict) else None


def _gist(doc: Any) -> str:
    """A short line for an answer not taken: ok, or its error code."""
    if not isinstance(doc, dict):
        return "not a response document"
    code = _code(doc)
    return f"ok: {str(doc.get('ok')).lower()}" + (f", error {code}" if code else "")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m agent.remote.client", description="sign and send edge-agent remote commands"
    )
    sub = p.add_subparsers(dest="action", required=True)
    for action in ("send", "sign"):
        s = sub.add_parser(action)
        s.add_argument(
            "command", help="status, reload, models/list, models/activate, models/install, snippet"
        )
        s.add_argument("--root", required=True, help="the gateway's topic root {prefix}/{site}/{gateway}")
        s.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM) of the operator")
        s.add_argument("--args", default="", help="the command's arguments as a JSON object")
        s.add_argument("--bundle", type=Path, help="models/install: a signed model folder to pack")
        if action == "send":
            s.add_argument("--url", required=True, help="mqtt://host:port or mqtts://host:port")
            s.add_argument("--cafile")
            s.add_argument("--cert")
            s.add_argument("--cert-key")
            s.add_argument("--username")
            s.add_argument("--password-file")
            s.add_argument("--reply-prefix", default="edge-ops/replies")
            s.add_argument("--timeout", type=float, default=30.0)
        else:
            s.add_argument(
                "--reply-to",
                help="the ResponseTopic it will be sent with: the gateway answers it only there",
            )
    args = p.parse_args(argv)
    try:
        if args.action == "sign":
            sys.stdout.write(build_payload(args, args.reply_to).decode() + "\n")
            return 0
        topic = reply_topic(args)  # signed into the body: the answer goes there only
        answer = send(args, build_payload(args, topic), topic)
    except ClientError as exc:
        p.exit(2, f"{p.prog} {args.action}: {exc}\n")
    if answer is None:
        print("no response within the timeout", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
