"""With `--log-json`, every line the agent writes on stderr is JSON, also LiteRT's own (ops review F4 of
2026-11-30): its C++ core prints `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` on fd 2 the
first time a process loads a .tflite model (the install's load check, or a start with a .tflite model),
which a log shipper parsing each line as JSON failed on. A fresh process: LiteRT prints it once only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import logging, sys
from pathlib import Path
from agent.inference.backend import load_model
from agent.logs import configure_logging

configure_logging(json_lines=True)
logging.getLogger("agent").info("before the model")
load_model(Path(sys.argv[1]), backend="tflite", precision="fp32")
load_model(Path(sys.argv[1]), backend="tflite", precision="int8")
logging.getLogger("agent").info("after the model")
"""


def test_litert_native_lines_reach_a_json_log_as_json() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO / "models" / "pump")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a line of the JSON log is not JSON: {line!r}") from None
    messages = [(e["logger"], e["level"], e["message"]) for e in entries]
    assert (
        "agent.inference.litert_backend",
        "info",
        "Created TensorFlow Lite XNNPACK delegate for CPU.",
    ) in messages
    assert messages[0][2] == "before the model" and messages[-1][2] == "after the model"
