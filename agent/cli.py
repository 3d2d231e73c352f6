"""The `edge-agent` command: run, demo, check-config, status, record, retry-refused.

Configuration problems print one line per problem (``file: key.path: what is wrong``) on stderr
and exit with code 2 before anything starts; so does a model a detector cannot load (``file: model
<name>: what is wrong``). Log lines name devices by pseudonym only; `status --config` shows each
device's configured id next to its pseudonym (it reads the site key), to tell which one a line means.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.errors import AgentError, ConfigError, InvalidConfigError, ModelError

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO; WARNING for the demo, whose receiver already shows every alarm",
    )
    parser.add_argument("--log-json", action="store_true", help="structured JSON log lines")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent with a configuration file")
    run.add_argument("--config", "-c", type=Path, required=True)

    check = sub.add_parser("check-config", help="check a configuration file and exit (0 ok, 2 bad)")
    check.add_argument("config", type=Path)

    status = sub.add_parser("status", help="the running agent's health (or its last heartbeat)")
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", "-c", type=Path, help="the agent's config file (finds its state_dir)")
    where.add_argument("--state-dir", type=Path, help="the agent's state folder")
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    retry = sub.add_parser(
        "retry-refused",
        help="after fixing the broker (ACL, topic), send again the messages it refused (kept aside)",
    )
    retry.add_argument("--config", "-c", type=Path, required=True)

    record = sub.add_parser("record", help="record the configured devices' raw readings for training")
    record.add_argument("--config", "-c", type=Path, required=True)
    record.add_argument("--out", "-o", type=Path, required=True, help="folder for the rotating files")
    record.add_argument("--device", action="append", default=None, help="device id (repeat; default all)")
    record.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    record.add_argument("--max-file-mb", type=float, default=16.0, help="size of one file (default 16)")
    record.add_argument("--max-files", type=int, default=8, help="files kept, oldest deleted (default 8)")
    record.add_argument("--gzip", action="store_true", help="compress the files")

    demo = sub.add_parser(
        "demo", help="the whole job on this machine: broker, simulated devices, agent, receiver"
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )
    demo.add_argument(
        "--config", type=Path, default=None, help="a config to demo instead of the embedded default"
    )
    demo.add_argument("--speed", type=float, default=None, help="simulated seconds per real second")

    args = parser.parse_args(argv)
    from agent.logs import configure_logging

    default_level = "WARNING" if args.command == "demo" else "INFO"
    configure_logging(args.log_level or default_level, json_lines=args.log_json)
    try:
        if args.command == "check-config":
            return _check(args.config)
        if args.command == "run":
            return _run(args.config)
        if args.command == "status":
            return _status(args.config, args.state_dir, args.json)
        if args.command == "record":
            return _record(args)
        if args.command == "retry-refused":
            return _retry_refused(args.config)
        return _demo(args.duration, args.config, args.speed)
    except InvalidConfigError as exc:
        return _config_failure(exc.source, exc.errors)
    except ConfigError as exc:
        return _config_failure(str(getattr(args, "config", "") or "config"), [exc])
    except ModelError as exc:  # a detector's model: as much a configuration problem as a bad key
        print(f"{getattr(args, 'config', '') or 'config'}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except AgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _config_failure(source: str, errors: Sequence[ConfigError]) -> int:
    for error in errors:
        print(f"{source}: {error}", file=sys.stderr)
    return EXIT_CONFIG


def _check(path: Path) -> int:
    from agent.config import load_config
    from agent.daemon import preflight

    config = load_config(path)
    preflight(config)
    devices = ", ".join(f"{d.id} ({d.kind}, {d.transport})" for d in config.devices)
    print(
        f"{path}: ok — gateway {config.gateway.id}, {len(config.devices)} device(s): {devices}; "
        f"{len(config.detectors)} detector(s), {len(config.alarms)} alarm rule(s)"
    )
    return 0


def _run(path: Path) -> int:
    from agent.config import load_config
    from agent.daemon import Agent, preflight

    config = load_config(path)
    preflight(config)
    logging.getLogger("agent").info("starting gateway agent, config sha256 %s", config.digest[:16])
    agent = Agent(config)
    asyncio.run(agent.run_until_signalled())
    return 0 if agent.failed is None else 1  # systemd's Restart=on-failure restarts only on a failure


def _status(config_path: Path | None, state_dir: Path | None, as_json: bool) -> int:
    import json

    from agent.config import load_config
    from agent.status import access_problem, device_names, read_status, render

    config = load_config(config_path) if config_path is not None else None
    folder = state_dir if state_dir is not None else config.gateway.state_dir if config else Path()
    found = read_status(folder)
    if found is None:
        why = access_problem(folder) or f"no running agent and no heartbeat yet in {folder}"
        print(f"edge-agent status: {why}", file=sys.stderr)
        return 1
    source, status = found
    names = device_names(config) if config is not None else {}
    print(json.dumps(status, indent=1) if as_json else render(source, status, names))
    return 0


def _retry_refused(config_path: Path) -> int:
    from agent.config import load_config

    path = load_config(config_path).outbox.path
    count = _requeue_refused(path)
    print(
        f"{count} refused message(s) in {path} are waiting to be sent again; a running agent sends "
        "them within a second (`edge-agent status` shows whether the broker takes them now)"
    )
    return 0


def _requeue_refused(path: Path) -> int:
    """Refused rows back to pending, in the outbox file a running agent may hold open (WAL allows it).

    Plain SQL rather than `Outbox(...)`: opening an Outbox also requeues the rows in flight (a second
    send by the running agent) and creates a missing key file. The statement is `Outbox.retry_refused`'s.
    """
    import sqlite3

    from agent.outbox import RETRY_REFUSED

    if not path.is_file():
        raise ConfigError("outbox.path", f"no outbox at {path}")
    try:
        db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        try:
            return db.execute(RETRY_REFUSED).rowcount
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ConfigError("outbox.path", f"cannot update {path}: {exc}") from None


def _record(args: argparse.Namespace) -> int:
    from agent.config import load_config
    from agent.sources import check_transport
    from agent.sources.record import ReadingRecorder, record_devices

    config = load_config(args.config)
    wanted = args.device or [d.id for d in config.devices]
    unknown = sorted(set(wanted) - {d.id for d in config.devices})
    if unknown:
        raise ConfigError("--device", f"no device with id {', '.join(unknown)} in {args.config}")
    devices = [d for d in config.devices if d.id in wanted]
    for i, device in enumerate(config.devices):
        if device in devices:
            check_transport(device, i)
    try:
        recorder = ReadingRecorder(
            args.out,
            max_file_bytes=int(args.max_file_mb * 1024 * 1024),
            max_files=args.max_files,
            compress=args.gzip,
        )
    except ValueError as exc:
        raise ConfigError("--max-file-mb/--max-files", str(exc)) from None
    with recorder:
        count = asyncio.run(record_devices(devices, recorder, duration_s=args.duration))
    print(f"recorded {count} readings of {len(devices)} device(s) into {args.out}")
    return 0


def _demo(duration: float | None, config: Path | None, speed: float | None) -> int:
    from agent.demo import run_demo

    return run_demo(duration=duration, config_path=config, speed=speed)


if __name__ == "__main__":
    sys.exit(main())
