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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.errors import AgentError, ConfigError, InvalidConfigError, ModelError

EXIT_CONFIG = 2
# `edge-agent status`: 0 the agent answered (live); 1 nothing to show (no agent answered, no heartbeat
# yet, or the folder is not readable); 3 not running (no socket, or nobody listens: the last heartbeat
# is shown); 4 the agent did not answer in time (hung or far too busy: the last heartbeat is shown).
STATUS_NOTHING = 1
STATUS_NOT_RUNNING = 3
STATUS_HUNG = 4


def main(argv: Sequence[str] | None = None) -> int:
    """The command's exit code. A reader that stops early (`edge-agent status | head -1`) ends it
    quietly: the rest of the output goes nowhere, with no traceback (exit code 1, as Python's
    documentation advises for a broken pipe)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a broken pipe can still be caught, rather than at exit
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe or socket broke: that one is a real error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush at exit must not fail again
        return 1
    return code


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # no file descriptor (a test's captured stdout)
        return False


def _global_options(*, after_command: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (`edge-agent run -c F --log-json`).
    The copies after the name default to SUPPRESS, so they never undo what was given before it."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--log-level",
        default=argparse.SUPPRESS if after_command else None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO; WARNING for the demo, whose receiver already shows every alarm",
    )
    options.add_argument(
        "--log-json",
        action="store_true",
        default=argparse.SUPPRESS if after_command else False,
        help="structured JSON log lines",
    )
    return options


CONFIG_HELP = "the agent's configuration file (TOML)"


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description=__doc__.splitlines()[0] if __doc__ else None,
        parents=[_global_options(after_command=False)],
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = [_global_options(after_command=True)]

    run = sub.add_parser("run", parents=common, help="run the agent with a configuration file")
    run.add_argument("--config", "-c", type=Path, required=True, help=CONFIG_HELP)

    check = sub.add_parser(
        "check-config", parents=common, help="check a configuration file and exit (0 ok, 2 bad)"
    )
    check.add_argument("config", type=Path, nargs="?", help=CONFIG_HELP + "; or give it with -c/--config")
    check.add_argument("--config", "-c", type=Path, dest="config_option", metavar="CONFIG", help=CONFIG_HELP)
    check.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="for a service manager's journal (the unit's ExecStartPre): nothing when the file is good, "
        "its problems with the file's values withheld when it is not",
    )

    status = sub.add_parser(
        "status",
        parents=common,
        help="the running agent's health (or its last heartbeat): exit 0 live, 1 nothing to show, "
        "3 agent not running, 4 agent did not answer (hung)",
    )
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", "-c", type=Path, help="the agent's config file (finds its state_dir)")
    where.add_argument("--state-dir", type=Path, help="the agent's state folder")
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    retry = sub.add_parser(
        "retry-refused",
        parents=common,
        help="after fixing the broker (ACL, topic), send again the messages it refused (kept aside)",
    )
    retry.add_argument("--config", "-c", type=Path, required=True, help=CONFIG_HELP)

    record = sub.add_parser(
        "record", parents=common, help="record the configured devices' raw readings for training"
    )
    record.add_argument("--config", "-c", type=Path, required=True, help=CONFIG_HELP)
    record.add_argument("--out", "-o", type=Path, required=True, help="folder for the rotating files")
    record.add_argument("--device", action="append", default=None, help="device id (repeat; default all)")
    record.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    record.add_argument("--max-file-mb", type=float, default=16.0, help="size of one file (default 16)")
    record.add_argument("--max-files", type=int, default=8, help="files kept, oldest deleted (default 8)")
    record.add_argument("--gzip", action="store_true", help="compress the files")

    demo = sub.add_parser(
        "demo",
        parents=common,
        help="the whole job on this machine: broker, simulated devices, agent, receiver",
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )
    demo.add_argument(
        "--config", type=Path, default=None, help="a config to demo instead of the embedded default"
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per real second (default: the config's; 10 in the demo's own; 1: real time)",
    )

    args = parser.parse_args(argv)
    if args.command == "check-config":
        if args.config is not None and args.config_option is not None and args.config != args.config_option:
            check.error("give the configuration file once: as the argument or with --config")
        args.config = args.config or args.config_option
        if args.config is None:
            check.error("the configuration file is required (edge-agent check-config FILE)")
    from agent.logs import configure_logging, flush_suppressed

    default_level = "WARNING" if args.command == "demo" else "INFO"
    configure_logging(args.log_level or default_level, json_lines=args.log_json)
    try:
        if args.command == "check-config":
            return _check(args.config, quiet=args.quiet)
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
    finally:
        flush_suppressed()


def _config_failure(source: str, errors: Sequence[ConfigError]) -> int:
    for error in errors:
        print(f"{source}: {error}", file=sys.stderr)
    return EXIT_CONFIG


def _check(path: Path, *, quiet: bool = False) -> int:
    from agent.config import load_config
    from agent.daemon import preflight

    try:
        config = load_config(path)
        preflight(config)
    except (ConfigError, InvalidConfigError, ModelError) as exc:
        if not quiet:
            raise
        return _withheld_failure(path, exc)
    from agent.config.exposure import exposure_warnings
    from agent.outbox.room import sizing_warning
    from agent.pipeline.stuck_alarms import nothing_can_alarm
    from agent.preflight import preflight_warnings

    for warning in (
        *preflight_warnings(config),
        sizing_warning(config.outbox),
        nothing_can_alarm(config),
        *exposure_warnings(config),
    ):
        if warning is not None:  # a warning: the config stays "ok"
            print(f"{path}: warning: {warning}", file=sys.stderr)
    if quiet:  # the "ok" line lists every device id: not for a journal
        return 0
    devices = ", ".join(f"{d.id} ({d.kind}, {d.transport})" for d in config.devices)
    print(
        f"{path}: ok — gateway {config.gateway.id}, {len(config.devices)} device(s): {devices}; "
        f"{len(config.detectors)} detector(s), {len(config.alarms)} alarm rule(s)"
    )
    return 0


def _withheld_failure(path: Path, exc: AgentError) -> int:
    """`check-config --quiet` on a bad file: each problem as a refused reload logs it, the key and the
    kind of problem with the file's values withheld (`agent.config.withheld`): any value may name a
    patient (a replay path), and a journal keeps the lines of every restart."""
    from agent.config.loader import read_config_file
    from agent.config.withheld import with_hint, without_values

    if isinstance(exc, InvalidConfigError):
        problems = list(exc.errors)
    else:
        problems = [exc if isinstance(exc, ConfigError) else ConfigError("", str(exc))]
    try:
        text = read_config_file(path)
    except InvalidConfigError:
        text = b""  # unreadable: its problem says so, and quotes nothing of it
    for line in without_values(problems, text):
        print(f"{path}: {with_hint(line, path)}", file=sys.stderr)
    return EXIT_CONFIG


def _run(path: Path) -> int:
    from agent.config import load_config
    from agent.core_dumps import forbid_core_dumps
    from agent.daemon import Agent, preflight

    forbid_core_dumps()  # before the config's ids are in memory
    config = load_config(path)
    preflight(config)
    logging.getLogger("agent").info("starting gateway agent, config sha256 %s", config.digest[:16])
    agent = Agent(config)
    asyncio.run(agent.run_until_signalled())
    return 0 if agent.failed is None else 1  # systemd's Restart=on-failure restarts only on a failure


def _status(config_path: Path | None, state_dir: Path | None, as_json: bool) -> int:
    import json

    from agent.config import load_config
    from agent.status import access_problem, device_names, not_live_text, read_status, render

    config = load_config(config_path) if config_path is not None else None
    folder = state_dir if state_dir is not None else config.gateway.state_dir if config else Path()
    found = read_status(folder)
    if found is None:
        why = access_problem(folder) or f"no running agent and no heartbeat yet in {folder}"
        print(f"edge-agent status: {why}", file=sys.stderr)
        return STATUS_NOTHING
    if found.not_live is not None:
        print(access_problem(folder) or not_live_text(found, folder), file=sys.stderr)
    names = device_names(config) if config is not None else {}
    print(
        json.dumps(found.status, indent=1)
        if as_json
        else render(found.source, found.status, names, found.age_s)
    )
    if found.not_live is None:
        return 0
    return STATUS_NOT_RUNNING if found.not_live in ("no socket", "refused") else STATUS_HUNG


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
