"""Start-up: from launching the interpreter to the first inference, and where the import time goes.

Start-up: the parent notes the wall clock, then launches a fresh `python` that does what `edge-agent
run` does before its first alarm can exist: import `agent.cli` and `agent.daemon`, load and check a TOML
config with the ecg-window autoencoder (the runtime asked for; ecg-beat before 2026-12-01), build the
pipeline (which reads the model, checks its sha256 against the card and loads it into the runtime), and
feed one stream a window of samples in 8-sample readings (500 for ecg-window, 64 for ecg-beat); the
first flush runs the model. The child prints the wall clock at that moment and
at each step; the parent reports the differences (median of `runs` launches). Broker and sources are
left out: they do not stand between start and the first inference.

Import time: `python -X importtime -c "import agent.cli, agent.daemon"`, the self and cumulative
microseconds of the heaviest modules, and separately the runtime imported at model load.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys, time
marks = {"interpreter": time.time()}
import agent.cli, agent.daemon
marks["imports"] = time.time()
from pathlib import Path
from agent.config import load_config
from agent.pipeline import Pipeline
import numpy as np
cfg = load_config(Path(sys.argv[1]))
marks["config"] = time.time()
pipeline = Pipeline(cfg, lambda device, prefix="d": prefix + "-" + device)
marks["pipeline_built"] = time.time()
from agent.readings import Reading
detector = pipeline.detectors[0]
ran = []
run = detector.model.backend.run
def first(batch):
    out = run(batch)
    ran.append(time.time())
    return out
detector.model.backend.run = first
t = 1_700_000_000.0
for i in range(detector.window // 8 + 1):
    values = np.sin(np.arange(8) / 5.0 + i)[:, None] * 0.5
    pipeline.ingest([Reading("bed-1/ecg", ("MLII",), values, t + i * 8 / 250.0, 0.0, 1 / 250.0)])
marks["first_inference"] = ran[0]
print("MARKS " + " ".join(f"{k}={v!r}" for k, v in marks.items()))
"""

CONFIG = """
[gateway]
id = "gw-start"
site = "lab"
state_dir = "{state}"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[outbox]
path = "{state}/outbox.sqlite"
[[devices]]
id = "bed-1"
kind = "wearable"
transport = "simulator"
[[detectors]]
id = "ecg-ae"
type = "autoencoder"
stream = "ecg"
channels = ["MLII"]
rate_hz = 250
params = {{ model = "{model}", backend = "{backend}", precision = "int8", hop_s = 0.032{extra} }}
[[alarms]]
condition = "ecg_unusual"
detector = "ecg-ae"
"""


def _launch(config: Path) -> dict[str, float]:
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("MARKS "))
    marks = {k: float(v) for k, v in (item.split("=") for item in line[6:].split())}
    return {k: 1e3 * (v - t0) for k, v in marks.items()}


def measure_startup(runs: int, backends: list[str], ecg_model: str = "ecg-window") -> dict[str, Any]:
    from tools.bench.scenarios import ECG_MODELS

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            config = Path(tmp) / f"{backend}.toml"
            model, extra = ECG_MODELS[ecg_model], ', input = "beats"' if ecg_model == "ecg-beat" else ""
            config.write_text(CONFIG.format(state=tmp, model=model, backend=backend, extra=extra))
            launches = [_launch(config) for _ in range(runs)]
            result[backend] = {
                f"{k}_ms": round(statistics.median(x[k] for x in launches), 1) for k in launches[0]
            }
            result[backend]["first_inference_ms_runs"] = [round(x["first_inference"], 1) for x in launches]
            print(f"startup {backend}: {result[backend]}", file=sys.stderr)
    result["imports"] = import_times()
    return result


def import_times(top: int = 12) -> dict[str, Any]:
    """-X importtime of the agent's entry modules and of each runtime (median total of 3)."""
    out: dict[str, Any] = {}
    for label, code in (
        ("agent.cli+agent.daemon", "import agent.cli, agent.daemon"),
        ("onnxruntime", "import onnxruntime"),
        ("ai_edge_litert", "from ai_edge_litert import interpreter"),
    ):
        totals = []
        rows: list[tuple[int, int, str]] = []
        for _ in range(3):
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=ROOT
            )
            rows = []
            for line in proc.stderr.splitlines():
                if not line.startswith("import time:") or "self [us]" in line:
                    continue
                self_us, cumulative, name = line[len("import time:") :].split("|")
                rows.append((int(self_us), int(cumulative), name[1:].rstrip()))  # nested names are indented
            top_level = [r for r in rows if not r[2].startswith(" ")]
            totals.append(sum(r[1] for r in top_level))
        heaviest = sorted(rows, key=lambda r: -r[1])[:top]
        out[label] = {
            "total_ms": round(statistics.median(totals) / 1e3, 1),
            "heaviest_cumulative_ms": {r[2].strip(): round(r[1] / 1e3, 1) for r in heaviest},
        }
    return out


if __name__ == "__main__":
    print(json.dumps(measure_startup(3, ["onnx", "tflite"]), indent=2))
