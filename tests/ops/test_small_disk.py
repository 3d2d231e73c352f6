"""`small_disk` itself: a test run again in a child pytest (no root) passes, fails or skips with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from small_disk import VIA_NAMESPACE, _unshare_works

HERE = Path(__file__).parent

CHILD_TEST = f"""
import sys

import pytest

sys.path.insert(0, {str(HERE)!r})
from small_disk import mount_small_disk


@pytest.fixture
def disk(request, tmp_path):
    yield from mount_small_disk(request, tmp_path / "disk")


def test_skipped_inside(disk):
    pytest.skip("nothing on this disk to test")
"""


@pytest.mark.skipif(not _unshare_works(), reason="unprivileged user namespaces (unshare -Urm) are off")
def test_a_test_skipped_in_the_child_is_reported_skipped_with_its_reason(tmp_path: Path) -> None:
    """Before, a child that skipped (exit 0) was reported as "passed in a child pytest"."""
    (tmp_path / "test_child.py").write_text(CHILD_TEST)
    outer = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_child.py"],
        cwd=tmp_path,
        env=os.environ | {VIA_NAMESPACE: "1"},  # the road without root, taken as root too
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outer.returncode == 0, outer.stdout + outer.stderr
    assert "skipped in a child pytest in a user namespace: nothing on this disk to test" in outer.stdout
    assert "passed in a child" not in outer.stdout
