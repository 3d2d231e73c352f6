"""The managed models directory: install signed bundles, anti-rollback, activation, listing."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from inference.broken_models import onnx_not_a_reconstruction

from agent.inference import load_model
from agent.inference.card import load_card
from agent.inference.signing import sign_artifacts
from agent.remote.bundles import CURRENT, ModelStore, pack_bundle, parse_version
from agent.remote.envelope import CommandRefusedError

from .conftest import ECG_BEAT, BundleFactory, signed_model


def refused(call: Any, *args: Any) -> CommandRefusedError:
    with pytest.raises(CommandRefusedError) as info:
        call(*args)
    return info.value


def test_install_writes_a_loadable_signed_version_and_activation_points_current(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory
) -> None:
    store = ModelStore(tmp_path / "models", public_key_file)
    card = store.install(make_bundle("1.1.0"))
    assert (card.name, card.version) == ("ecg-beat", "1.1.0")
    assert store.active_version("ecg-beat") is None  # installing does not activate
    assert store.activate("ecg-beat", "1.1.0") is None
    current = tmp_path / "models" / "ecg-beat" / CURRENT
    assert current.resolve() == (tmp_path / "models" / "ecg-beat" / "1.1.0").resolve()
    model = load_model(current, backend="onnx", public_key=public_key_file)  # what a detector would do
    assert model.card.version == "1.1.0"
    assert [e.to_json() for e in store.entries()] == [
        {"name": "ecg-beat", "version": "1.1.0", "active": True, "managed": True}
    ]
    leftovers = [p.name for p in (tmp_path / "models" / "ecg-beat").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_versions_not_newer_than_the_active_one_are_refused(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory
) -> None:
    store = ModelStore(tmp_path / "models", public_key_file)
    old, new = make_bundle("1.1.0"), make_bundle("1.2.0")
    store.install(old)
    store.install(new)
    store.activate("ecg-beat", "1.2.0")
    assert "already installed" in refused(store.install, old).message  # the replayed bundle
    older = make_bundle("1.0.5")
    assert "anti-rollback" in refused(store.install, older).message
    assert not (tmp_path / "models" / "ecg-beat" / "1.0.5").exists()
    assert store.active_version("ecg-beat") == "1.2.0"
    # The operator may still go back deliberately, to a version that is on disk and verifies.
    assert store.activate("ecg-beat", "1.1.0") == "1.2.0"


@pytest.mark.parametrize(
    ("on_disk", "alias"), [("1.2.0", "1.2"), ("3.0.0", "3.0"), ("3.0.0", "3.0.0.0"), ("1.2", "01.2.0")]
)
def test_a_version_equal_to_one_on_disk_is_refused_as_already_installed(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory, on_disk: str, alias: str
) -> None:
    """Review finding 6: versions compare by their numbers (1.2 == 1.2.0), but only the folder of the
    same spelling counted as on disk: a bundle "1.2" (other weights, validly signed) was installed
    beside an inactive 1.2.0, and models/list showed both."""
    store = ModelStore(tmp_path / "models", public_key_file)
    store.install(make_bundle("1.1.0"))
    store.activate("ecg-beat", "1.1.0")
    store.install(make_bundle(on_disk))  # newer than the active one, not active
    error = refused(store.install, make_bundle(alias))
    assert (error.code, error.message) == ("refused", f"this version is already installed (as {on_disk})")
    assert [e.version for e in store.entries()] == ["1.1.0", on_disk]
    assert "already installed (as 1.1.0)" in refused(store.install, make_bundle("1.1")).message  # active


def test_bundles_signed_by_another_key_or_altered_are_refused(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory
) -> None:
    store = ModelStore(tmp_path / "models", public_key_file)
    foreign = make_bundle("2.0.0", key=Ed25519PrivateKey.generate())
    assert "does not verify" in refused(store.install, foreign).message

    altered = make_bundle("2.0.1")
    name = next(iter(altered["files"]))
    data = bytearray(base64.b64decode(altered["files"][name]))
    data[-1] ^= 1
    altered["files"][name] = base64.b64encode(bytes(data)).decode()
    assert "does not match its card" in refused(store.install, altered).message

    retuned = copy.deepcopy(make_bundle("2.0.2"))
    retuned["card"]["threshold"] = 9.0  # a signed model with a looser threshold is another model
    assert "does not verify" in refused(store.install, retuned).message
    assert sorted(p.name for p in (tmp_path / "models" / "ecg-beat").iterdir()) == []


def test_bundle_shape_and_names_are_checked(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory
) -> None:
    store = ModelStore(tmp_path / "models", public_key_file)
    bundle = make_bundle("3.0.0")
    missing = copy.deepcopy(bundle)
    missing["files"].pop(next(iter(missing["files"])))
    assert "exactly the card's artifacts" in refused(store.install, missing).message
    escaping = copy.deepcopy(bundle)
    escaping["card"]["name"] = "../evil"
    assert refused(store.install, escaping).code in ("bad_request", "refused")
    assert refused(store.install, "not a bundle").code == "bad_request"
    odd_version = copy.deepcopy(bundle)
    odd_version["card"]["version"] = "3.0.0-beta"
    assert "dotted numbers" in refused(store.install, odd_version).message
    assert not (tmp_path / "evil").exists()


def test_without_a_public_key_nothing_is_installed_or_activated(
    tmp_path: Path, make_bundle: BundleFactory
) -> None:
    store = ModelStore(tmp_path / "models", None)
    assert "unsigned" in refused(store.install, make_bundle("1.1.0")).message
    assert refused(store.activate, "ecg-beat", "1.0.0").code == "refused"


def test_activation_refuses_unknown_and_tampered_versions(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory
) -> None:
    store = ModelStore(tmp_path / "models", public_key_file)
    assert "no such" in refused(store.activate, "ecg-beat", "9.9.9").message
    assert refused(store.activate, "../ecg-beat", "1.0.0").code == "bad_request"
    store.install(make_bundle("1.1.0"))
    (tmp_path / "models" / "ecg-beat" / "1.1.0" / "signature.json").unlink()
    assert "unsigned" in refused(store.activate, "ecg-beat", "1.1.0").message
    assert store.active_version("ecg-beat") is None


def test_the_shipped_flat_layout_is_listed_as_unmanaged(tmp_path: Path, public_key_file: Path) -> None:
    store = ModelStore(ECG_BEAT.parent, public_key_file)
    listed = {e.name: e for e in store.entries()}
    assert listed["ecg-beat"].managed is False and listed["ecg-beat"].version == "1.0.0"


def test_versions_compare_numerically() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.9")
    assert parse_version("1.2") == parse_version("1.2.0")
    with pytest.raises(CommandRefusedError):
        parse_version("v1")


@pytest.mark.parametrize(
    ("key", "content", "reason"),
    [
        ("onnx_fp32", "mean", r"ecg-beat\.fp32\.onnx: onnx output \[1, 64\] does not match the card"),
        ("tflite_int8", "garbage", r"ecg-beat\.int8\.tflite: not a TFLite model"),
    ],
)
def test_a_signed_version_that_cannot_run_here_is_neither_installed_nor_activated(
    tmp_path: Path, public_key_file: Path, private_key: Ed25519PrivateKey, key: str, content: str, reason: str
) -> None:
    """Validly signed, sha256 matching its card, but an artifact no runtime here can run (even one the
    config does not use yet): refused at install and at activation, nothing written or swapped."""
    folder = signed_model(tmp_path / "build", "1.1.0", private_key)
    raw = json.loads((folder / "card.json").read_text())
    data = onnx_not_a_reconstruction(64, 1, "mean") if content == "mean" else b"this is not a model" * 50
    (folder / raw["artifacts"][key]["file"]).write_bytes(data)
    raw["artifacts"][key].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "card.json").write_text(json.dumps(raw, indent=2))
    sign_artifacts(folder, load_card(folder), private_key)
    store = ModelStore(tmp_path / "models", public_key_file)
    error = refused(store.install, pack_bundle(folder))
    assert error.code == "refused" and re.search(reason, error.message), error.message
    assert [p.name for p in (tmp_path / "models" / "ecg-beat").iterdir() if p.name != ".lock"] == []
    # The same folder put on disk by hand (a copy, a restore) is not made current either.
    shutil.copytree(folder, tmp_path / "models" / "ecg-beat" / "1.1.0")
    assert re.search(reason, refused(store.activate, "ecg-beat", "1.1.0").message)
    assert store.active_version("ecg-beat") is None
