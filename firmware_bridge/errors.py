"""Errors raised by firmware_bridge's pure functions (stream decoders count problems instead of raising).

They subclass `ValueError` so that callers outside the agent can catch them generically; the agent's
sources catch these exact types, count them per device and carry on.
"""

from __future__ import annotations


class GattDecodeError(ValueError):
    """A GATT characteristic value does not match its specification layout."""

    def __init__(self, characteristic: str, reason: str) -> None:
        super().__init__(f"{characteristic}: {reason}")
        self.characteristic = characteristic
        self.reason = reason


class ChannelMapError(ValueError):
    """A DATA block refers to channels or sample types that the device's HELLO did not declare."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"device {device}: {reason}")
        self.device = device
        self.reason = reason
