"""agent.remote.heap_trim: no subprocess at import (every agent start imports it), a real trim after."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.addaudithook(lambda event, args: print("SPAWNED", args[0]) if event == "subprocess.Popen" else None)
import agent.remote.commands
print("IMPORTED")
from agent.remote.heap_trim import _malloc_trim, trim_heap
trim_heap()
print("TRIM", _malloc_trim() is not None)
"""


def test_importing_the_remote_commands_spawns_no_process_and_the_first_trim_finds_glibc() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "IMPORTED", out  # find_library("c") ran `ldconfig -p` here
    assert "SPAWNED" not in out, out
    if sys.platform == "linux" and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert "TRIM True" in out, out
