"""No text sends a user to PyPI for edge-agent: the `edge-agent` project there is somebody else's.

A new-user review found the README's `pip install 'edge-agent[onnx]'` installed an unrelated package
(as root, on a hospital gateway). The package is installed from a checkout; hints for a missing
optional runtime name that runtime's own package.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BY_NAME = re.compile(r"pip3?\s+install\s+(?:-\S+\s+)*['\"`]?edge[-_]agent\b", re.IGNORECASE)


def texts() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    folders = ("agent", "firmware_bridge", "tools", "scripts")
    code = sorted(p for d in folders for p in (ROOT / d).rglob("*"))
    wanted = {".py", ".sh", ".md", ".toml"}
    return docs + [p for p in code if p.suffix in wanted or p.parent.name == "scripts"]


def test_no_text_installs_edge_agent_from_pypi_by_name() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in texts()
        if path.is_file()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if BY_NAME.search(line)
    ]
    assert not found, found


def test_the_pattern_catches_the_old_readme_line() -> None:
    assert BY_NAME.search("sudo /opt/edge-agent/bin/pip install 'edge-agent[onnx]'")
    assert BY_NAME.search("pip install edge-agent")
    assert not BY_NAME.search("sudo /opt/edge-agent/bin/pip install '.[onnx]'")
