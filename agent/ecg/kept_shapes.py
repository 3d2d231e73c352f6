"""A device's beat-shape templates handed to the next ECG -> RR stage: a reload's, or the next start's.

The stage (agent.ecg.rr_from_ecg) judges a beat ventricular against templates of the patient's own beats
built from the first beats it sees. A new stage (a reload makes a new session; a restart a new process)
that built them afresh learnt a VT under way in its first ~8 beats as the "normal" beat, and that VT was
never alarmed. The electrodes and the patient are the same: the old templates are still right. So, as
after a hole in one stage (`KEEP_SHAPES_S`, "gapkeep"), the new stage goes on with them when:

- the device and all the templates depend on are unchanged: its config but `lost_after_s` (the source,
  its patient, `[devices.beats]`) and the beat channels a detector reads (`signature`, keyed by the site's
  pseudonym key, so the state file does not hold a plain digest of a patient's id);
- its first ECG block is at the same rate and starts less than `KEEP_SHAPES_S` from where the old
  stage's last block ended (`KeptShapes.ended_at`; checked by the stage itself, as for a hole).

At a reload they are handed over in memory (`Session.beat_handover`). For a restart they are saved with
the pipeline's state (`pipeline.json`, sealed when the outbox is: they are ECG morphology, patient data)
at each of its saves, no more often, and restored at the start (`restored`) when the break since
`ended_at` is under `KEEP_SHAPES_S`. Anything else (none saved, too old, the config changed, an entry that
does not parse: another version, a damaged or foreign file) starts the templates afresh with one INFO
line saying why; it never stops the start. The QRS detector, the P-wave template and the heart rate's
intervals start afresh, as after a hole.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from agent.config.schema import DeviceConfig
from agent.ecg.beat_shape import BeatShapes

log = logging.getLogger(__name__)

KEEP_SHAPES_S = 60.0  # a break shorter than this (same rate) keeps the templates: same electrodes
SAVED_KEY = "beat_shapes"  # in pipeline.json
VERSION = 1


@dataclass(frozen=True, slots=True)
class KeptShapes:
    """One device's templates as its stage left them: taken, the stage that made them is done."""

    shapes: BeatShapes
    period_s: float  # the ECG's sample spacing they were made at
    ended_at: float  # wall time where the last ECG block the stage saw ended: they were current then


@dataclass(frozen=True, slots=True)
class Handed:
    """Kept shapes with the signature of the device and channels they were made for."""

    kept: KeptShapes
    signature: str


def signature(device: DeviceConfig, channels: Collection[str], keyed: Callable[[str, str], str]) -> str:
    """What the templates depend on: the device's config but `lost_after_s`, and the channels computed.
    `keyed`: the site's pseudonymizer (an HMAC: the config holds the patient's id)."""
    plain = repr((dataclasses.replace(device, lost_after_s=0.0), sorted(channels)))
    return keyed(plain, "s")


def adopted(
    handed: Mapping[str, Handed],
    signatures: Mapping[str, str],
    names: Mapping[str, str],
    why_none: str,
    now: float | None = None,
) -> dict[str, KeptShapes]:
    """The handed templates each device of `signatures` (device id -> signature) goes on with, logging for
    each device why not when it does not (`names`: its pseudonym; `why_none`: nothing handed for it).
    `now` (a restart): their `ended_at` must be less than `KEEP_SHAPES_S` before it."""
    out = {}
    for device, wanted in signatures.items():
        name = names[device]
        given = handed.get(device)
        if given is None:
            log.info("%s: beat-shape templates start afresh: %s", name, why_none)
        elif given.signature != wanted:
            log.info(
                "%s: beat-shape templates start afresh: its config or the beat channels read changed",
                name,
            )
        elif now is not None and not abs(now - given.kept.ended_at) < KEEP_SHAPES_S:
            log.info(
                "%s: beat-shape templates start afresh: the saved ones are %.0f s old (kept under %.0f s)",
                name,
                now - given.kept.ended_at,
                KEEP_SHAPES_S,
            )
        else:
            out[device] = given.kept
    return out


def saved(handed: Handed) -> dict[str, Any]:
    """One device's entry in `pipeline.json` (a copy: the stage goes on)."""
    kept = handed.kept
    return {
        "version": VERSION,
        "signature": handed.signature,
        "period_s": kept.period_s,
        "ended_at": kept.ended_at,
        "shapes": kept.shapes.saved(),
    }


def restored(entries: Any, devices: Mapping[str, str]) -> dict[str, Handed]:
    """The saved entries (`pipeline.json`'s `SAVED_KEY`: device pseudonym -> `saved`) of the devices of
    `devices` (device id -> pseudonym) that parse; one that does not is logged and left out."""
    if not isinstance(entries, dict):
        return {}
    out = {}
    for device, name in devices.items():
        entry = entries.get(name)
        if entry is None:
            continue
        try:
            out[device] = _entry(entry)
        except (KeyError, TypeError, ValueError) as exc:  # another version, a damaged or foreign file
            log.info(
                "%s: the saved beat-shape templates cannot be read (%s); they start afresh",
                name,
                type(exc).__name__,
            )
    return out


def _entry(entry: Any) -> Handed:
    if not isinstance(entry, dict) or entry.get("version") != VERSION:
        raise ValueError("not an entry of this version")
    period_s, ended_at, sign = entry["period_s"], entry["ended_at"], entry["signature"]
    if not (isinstance(period_s, float) and 0 < period_s < math.inf and isinstance(sign, str)):
        raise ValueError("period_s or signature")
    if not (isinstance(ended_at, float) and math.isfinite(ended_at)):
        raise ValueError("ended_at")
    shapes = BeatShapes.restored(entry["shapes"])
    if not math.isclose(shapes.rate_hz * period_s, 1.0, rel_tol=1e-9):
        raise ValueError("rate_hz and period_s disagree")
    return Handed(KeptShapes(shapes, period_s, ended_at), sign)
