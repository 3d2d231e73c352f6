"""The gateway does not let its inference runtime call home.

onnxruntime >= 1.29 on Linux sends usage telemetry to Microsoft by default: it writes a device id and
an event cache under ~/.cache/Microsoft and looks up mobile.events.data.microsoft.com. The agent
turns it off before the runtime starts, unless the operator set `ORT_DISABLE_TELEMETRY` themselves.
Each case runs a fresh interpreter (the runtime reads the switch once, when it initialises) with an
empty HOME, loads a shipped model through the agent's backend and runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.inference.onnx_backend import TELEMETRY_SWITCH

MODEL = Path(__file__).resolve().parents[2] / "models" / "pump"

LOAD_AND_RUN = """
import os, sys
from pathlib import Path
import numpy as np
from agent.inference.card import load_card
from agent.inference.onnx_backend import OnnxBackend
card = load_card(Path(sys.argv[1]))
backend = OnnxBackend()
backend.load((Path(sys.argv[1]) / card.artifact("onnx_int8").file).read_bytes(), card)
backend.run(np.zeros((4, card.window, len(card.channels)), np.float32))
print(os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


def _run_model(home: Path, switch: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != TELEMETRY_SWITCH}
    env["HOME"] = str(home)
    if switch is not None:
        env[TELEMETRY_SWITCH] = switch
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, str(MODEL)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _written_under(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_the_onnx_backend_turns_the_runtimes_telemetry_off(tmp_path: Path) -> None:
    switch = _run_model(tmp_path, None)
    assert _written_under(tmp_path) == []  # no device id, no event cache
    assert switch == "1"


def test_an_operators_own_setting_is_kept(tmp_path: Path) -> None:
    assert _run_model(tmp_path, "1") == "1"
    assert _written_under(tmp_path) == []
