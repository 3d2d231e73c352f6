"""The daemon does not load cryptography (~8 MB of RSS) unless keys are used: model signatures, remote
commands or outbox encryption import it where they need it."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_daemon_modules_import_without_cryptography() -> None:
    loaded = loaded_after("import agent.cli, agent.daemon, agent.pipeline, agent.outbox, agent.remote")
    assert "agent" in loaded  # the probe sees the imports
    assert "cryptography" not in loaded


def test_a_sealer_loads_cryptography_when_encryption_is_used() -> None:
    loaded = loaded_after("from agent.sealing import Sealer\nSealer(bytes(32)).seal(b'x', 'id', 'topic')")
    assert "cryptography" in loaded
