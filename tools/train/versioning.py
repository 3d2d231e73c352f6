"""`--version` of every training tool that writes a card (torch-free, so parsing needs no "train" extra).

A gateway's `models/install` refuses a version it already has, and a card's version is covered by its
signature: a retrained model gets its new version here, before it is signed, not by a hand edit after.
"""

from __future__ import annotations

import argparse
import re

DEFAULT_VERSION = "1.0.0"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version",
        type=_dotted_version,
        default=DEFAULT_VERSION,
        help=f"card version, dotted numbers (default {DEFAULT_VERSION}); give every retrained model a new"
        " one: a gateway refuses to install a version it already has",
    )


def _dotted_version(text: str) -> str:
    """Dotted numbers only: what a gateway's models/install accepts and compares (agent/remote/bundles.py)."""
    if not re.fullmatch(r"\d+(\.\d+)*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not dotted numbers, e.g. 1.2.0")
    return text
