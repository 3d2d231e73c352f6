"""A HELLO's float32 scale and offset can hold NaN or infinity (a firmware bug, with a correct CRC):
`to_physical` refuses such a channel with ChannelMapError, which sources count as a bad block, instead
of passing infinities on as measurements (with numpy RuntimeWarnings on the way)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from firmware_bridge.errors import ChannelMapError
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType
from firmware_bridge.physical import channel_names, to_physical

EXTREMES = np.array([[np.iinfo(np.int32).min], [-1], [0], [np.iinfo(np.int32).max]])


def hello(scale: float, offset: float) -> Hello:
    return Hello("dev", (1, 0, 0), (ChannelSpec("hr", "bpm", SampleType.INT32, 1.0, scale, offset),))


@pytest.mark.parametrize(
    ("scale", "offset"),
    [(math.inf, 0.0), (-math.inf, 0.0), (math.nan, 0.0), (1.0, math.inf), (1.0, math.nan)],
)
def test_a_non_finite_scale_or_offset_is_a_channel_map_error(scale: float, offset: float) -> None:
    block = DataBlock(0, SampleType.INT32, (0,), EXTREMES)
    with pytest.raises(ChannelMapError, match="non-finite scale or offset"):
        to_physical(block, hello(scale, offset))
    with pytest.raises(ChannelMapError):
        channel_names(block, hello(scale, offset))


def test_finite_extremes_stay_finite_without_warnings() -> None:
    largest = float(np.finfo(np.float32).max)  # the largest scale and offset a float32 field holds
    block = DataBlock(0, SampleType.INT32, (0,), EXTREMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = to_physical(block, hello(largest, -largest))
    assert np.isfinite(values).all()
