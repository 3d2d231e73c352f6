"""Device wire formats: sans-I/O decoders, the reference firmware encoder and device emulators.

Nothing here imports asyncio, bleak, serial, paho or the agent: bytes in, frames and values out.

* Serial frame protocol (docs/serial-protocol.md): `FrameDecoder`, `encode_frame`, the messages in
  `frame_messages`, and `to_physical` to scale DATA blocks with the HELLO channel table.
* Line formats: `CsvLineDecoder`, `JsonLineDecoder`.
* BLE GATT values: `firmware_bridge.gatt` (health profiles, Polar PMD); they raise `GattDecodeError`.
* Every stream decoder: `feed(bytes)` then `next_frame()` until `NEED_DATA`; never raises, counts
  what it rejects in `.stats`.
"""

from firmware_bridge.decoding import NEED_DATA, NeedData, StreamDecoder
from firmware_bridge.errors import ChannelMapError, GattDecodeError
from firmware_bridge.frame_codec import Frame, FrameDecoder, FrameDecoderStats, encode_frame
from firmware_bridge.line_formats import CsvLineDecoder, JsonLineDecoder, LineDecoderStats, LineSample
from firmware_bridge.physical import channel_names, sample_times_us, to_physical

__all__ = [
    "NEED_DATA",
    "ChannelMapError",
    "CsvLineDecoder",
    "Frame",
    "FrameDecoder",
    "FrameDecoderStats",
    "GattDecodeError",
    "JsonLineDecoder",
    "LineDecoderStats",
    "LineSample",
    "NeedData",
    "StreamDecoder",
    "channel_names",
    "encode_frame",
    "sample_times_us",
    "to_physical",
]
