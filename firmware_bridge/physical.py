"""Raw DATA blocks → physical values, using the channel table the device declared in HELLO.

One vectorised multiply-add per block (raw * scale + offset per column) and sample times computed
from the block's first-sample time and the channel rate; no per-sample Python objects.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from firmware_bridge.errors import ChannelMapError
from firmware_bridge.frame_messages import DataBlock, Hello


def _checked_specs(block: DataBlock, hello: Hello) -> None:
    for index in block.channels:
        if index >= len(hello.channels):
            raise ChannelMapError(
                hello.device_id, f"DATA names channel {index}, HELLO declared {len(hello.channels)}"
            )
        spec = hello.channels[index]
        if spec.sample_type is not block.sample_type:
            raise ChannelMapError(
                hello.device_id,
                f"channel {spec.name!r} declared {spec.sample_type.name}, "
                f"DATA carries {block.sample_type.name}",
            )
        if not (math.isfinite(spec.scale) and math.isfinite(spec.offset)):  # f32 fields can hold NaN/inf
            raise ChannelMapError(
                hello.device_id, f"channel {spec.name!r} declared a non-finite scale or offset"
            )


def to_physical(block: DataBlock, hello: Hello) -> npt.NDArray[np.float64]:
    """`(n_samples, n_channels)` float64 array in each channel's unit, always finite. Raises
    ChannelMapError (also for a channel whose declared scale or offset is NaN or infinite)."""
    _checked_specs(block, hello)
    specs = [hello.channels[i] for i in block.channels]
    scale = np.array([s.scale for s in specs], dtype=np.float64)
    offset = np.array([s.offset for s in specs], dtype=np.float64)
    return block.samples.astype(np.float64) * scale + offset


def channel_names(block: DataBlock, hello: Hello) -> tuple[str, ...]:
    """Names of the block's columns, in order. Raises ChannelMapError."""
    _checked_specs(block, hello)
    return tuple(hello.channels[i].name for i in block.channels)


def sample_times_us(block: DataBlock, hello: Hello) -> npt.NDArray[np.float64]:
    """Device time (µs) of each sample of the block, from the first channel's declared rate."""
    _checked_specs(block, hello)
    rate = hello.channels[block.channels[0]].rate_hz
    if not rate > 0:
        raise ChannelMapError(hello.device_id, f"channel {block.channels[0]} has no positive rate")
    return block.first_sample_us + np.arange(block.samples.shape[0], dtype=np.float64) * (1e6 / rate)
