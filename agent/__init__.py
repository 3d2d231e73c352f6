"""edge-agent: the gateway daemon (sources, pipeline, detectors, alarms, outbox, uplink)."""

__version__ = "0.1.0"
