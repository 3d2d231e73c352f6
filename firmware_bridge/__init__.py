"""Device wire formats: sans-I/O decoders, the reference firmware encoder and device emulators.

Nothing here imports asyncio, bleak, serial or paho: bytes in, frames and readings out.
"""
