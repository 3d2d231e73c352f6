"""Detector types by name, and `build_detector` which validates a config's params and builds one.

Each type is a class with `from_config(config, rate_hz)`; adding a type means adding it to `TYPES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from agent.config.schema import DetectorConfig
from agent.detectors.af import AtrialFibrillationDetector
from agent.detectors.base import StreamingDetector
from agent.detectors.context import ContextDetector
from agent.detectors.cusum import CusumDetector
from agent.detectors.dropout import DropoutDetector
from agent.detectors.ewma import EwmaDetector
from agent.detectors.flatline import FlatlineDetector
from agent.detectors.limit import LimitDetector
from agent.detectors.new_extreme import NewExtremeDetector
from agent.detectors.pvc import PvcDetector
from agent.detectors.rate_of_change import RateOfChangeDetector
from agent.detectors.robust_z import RobustZDetector
from agent.detectors.spo2 import DesaturationDetector
from agent.detectors.ventricular_run import VentricularRunDetector
from agent.detectors.vibration import VibrationDetector, input_unit
from agent.detectors.window_pca import WindowPcaDetector
from agent.errors import ConfigError

Factory = Callable[[DetectorConfig, float], StreamingDetector]


def _autoencoder(config: DetectorConfig, rate_hz: float) -> StreamingDetector:
    # Imported on use: `agent.inference.detector` imports `agent.detectors`, so a top-level import here
    # made `import agent.inference` fail (circular), and configs without a model skip its import cost.
    from agent.inference.detector import AutoencoderDetector

    return AutoencoderDetector.from_config(config, rate_hz)


TYPES: Mapping[str, Factory] = MappingProxyType(
    {
        "limit": LimitDetector.from_config,
        "robust_z": RobustZDetector.from_config,
        "ewma": EwmaDetector.from_config,
        "cusum": CusumDetector.from_config,
        "rate_of_change": RateOfChangeDetector.from_config,
        "flatline": FlatlineDetector.from_config,
        "dropout": DropoutDetector.from_config,
        "autoencoder": _autoencoder,
        "af": AtrialFibrillationDetector.from_config,
        "pvc": PvcDetector.from_config,
        "ventricular_run": VentricularRunDetector.from_config,
        "spo2_desaturation": DesaturationDetector.from_config,
        "vibration": VibrationDetector.from_config,
        "new_extreme": NewExtremeDetector.from_config,
        "window_pca": WindowPcaDetector.from_config,
        "context": ContextDetector.from_config,
    }
)

# Types whose samples must be in one unit, and that unit for a config (canonical, agent.units): a serial
# device declaring another unit of the same quantity is converted to it (agent.sources.serial_units).
INPUT_UNITS: Mapping[str, Callable[[DetectorConfig], str]] = MappingProxyType({"vibration": input_unit})


def build_detector(config: DetectorConfig, rate_hz: float) -> StreamingDetector:
    """A detector of `config.type` over a stream sampled at `rate_hz`; ConfigError names the bad key."""
    factory = TYPES.get(config.type)
    if factory is None:
        known = ", ".join(sorted(TYPES))
        problem = f'unknown detector type "{config.type}" (known: {known})'
        raise ConfigError(f"detectors.{config.id}.type", problem)
    return factory(config, rate_hz)
