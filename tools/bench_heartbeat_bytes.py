"""Heartbeat bytes of the demo config (agent/defaults/demo.toml, `scripts/demo`'s) over its first hour and
after: the daemon's session assembly fed the demo devices' simulated readings, and `Heartbeat.to_json()`
(what the outbox stores and MQTT carries) measured at each checkpoint (simulated seconds). The demo's
two window_pca rules learn for 3600 s; no device has a `running_when` gate.

    python -m tools.bench_heartbeat_bytes [60,600,1800,3590,3700,4000]
"""

from __future__ import annotations

import sys
import tempfile
import tomllib
from importlib import resources
from pathlib import Path

from agent.config import parse_config
from agent.readings import Reading
from agent.simulation import simulate
from tests.ops.daemon_session import session  # the daemon's session, minus sources and a broker

T0 = 1.8e9


def main(checks: list[int]) -> None:
    raw = tomllib.loads(resources.files("agent").joinpath("defaults/demo.toml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        raw["gateway"]["state_dir"] = str(Path(tmp) / "state")
        raw["outbox"]["path"] = str(Path(tmp) / "outbox.sqlite")
        run = session(Path(tmp), raw)
        readings: list[Reading] = []
        for device in parse_config(raw, base_dir=Path(tmp)).devices:
            readings += simulate(device, max(checks), T0)[0]
        readings.sort(key=lambda reading: reading.wall_time)
        fed = 0
        for check in checks:
            upto = fed
            while upto < len(readings) and readings[upto].wall_time < T0 + check:
                upto += 1
            run.pipeline.ingest(readings[fed:upto])
            fed = upto
            beat = run._heartbeat()
            extra = sorted(k for k in ("running", "learning") if k in beat.to_payload())
            print(
                f"t = {check:5d} s: {len(beat.to_json())} B"
                + (f" (with {', '.join(extra)})" if extra else "")
            )


if __name__ == "__main__":
    main([int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "60,600,1800,3590,3700,4000").split(",")])
