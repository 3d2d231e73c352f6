"""Package rules: firmware_bridge stands alone (no asyncio/bleak/serial/paho/agent) and every stream
decoder honours the same feed/next_frame contract."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import firmware_bridge
from firmware_bridge import NEED_DATA, CsvLineDecoder, FrameDecoder, JsonLineDecoder, StreamDecoder


def test_no_forbidden_imports_in_any_module() -> None:
    modules = [m.name for m in pkgutil.walk_packages(firmware_bridge.__path__, "firmware_bridge.")]
    assert "firmware_bridge.gatt.polar_pmd" in modules and "firmware_bridge.emulator" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'asyncio','bleak','serial','paho','agent'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_stream_decoders_share_the_contract() -> None:
    decoders: list[StreamDecoder[object]] = [FrameDecoder(), CsvLineDecoder(("a",)), JsonLineDecoder(("a",))]
    for dec in decoders:
        dec.feed(b"\x00garbage\x00\n{]\n")
        while dec.next_frame() is not NEED_DATA:
            pass
        assert dec.next_frame() is NEED_DATA
