"""An install cut off by kill -9 (ops review F5 of 2026-11-30): its hidden `.incoming-*` folder stayed in
the models folder for good (up to a bundle's size per crash), a restart did not remove it, and
`models/list` reported it as a version (".incoming-u063z37h"). Now a session's start removes it, so does
the next install, and hidden names are never listed. The kill is real: a child process installs a
bundle and SIGKILLs itself while writing the signature, after the artifacts and the card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.config import parse_config
from agent.remote.bundles import ModelStore
from agent.remote.commands import RemoteCommands
from agent.uplink.topics import Topics

from .conftest import BASE, BundleFactory

KILLED_MID_INSTALL = """
import json, os, signal, sys
from pathlib import Path
from agent.remote import bundles

write = bundles._write_synced
def write_then_die(path, data):
    if path.name == bundles.SIGNATURE_FILE:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 mid-install: no cleanup runs
    write(path, data)

bundles._write_synced = write_then_die
store = bundles.ModelStore(Path(sys.argv[1]), Path(sys.argv[2]))
store.install(json.loads(Path(sys.argv[3]).read_text()))
"""


def cut_off_install(models: Path, public_key_file: Path, bundle: dict[str, object], tmp_path: Path) -> Path:
    doc = tmp_path / "bundle.json"
    doc.write_text(json.dumps(bundle))
    run = subprocess.run(
        [sys.executable, "-c", KILLED_MID_INSTALL, str(models), str(public_key_file), str(doc)],
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == -9, run.stderr
    (leftover,) = (models / "ecg-beat").glob(".incoming-*")
    assert (leftover / "card.json").is_file()  # what models/list took for a version
    return leftover


def test_a_session_start_removes_an_install_cut_off_and_lists_no_hidden_folder(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory
) -> None:
    models = tmp_path / "models"
    store = ModelStore(models, public_key_file)
    store.install(make_bundle("1.1.0"))
    store.activate("ecg-beat", "1.1.0")
    bundle = make_bundle("1.2.0")
    leftover = cut_off_install(models, public_key_file, bundle, tmp_path)
    listed = [e.to_json() for e in store.entries()]
    assert listed == [{"name": "ecg-beat", "version": "1.1.0", "active": True, "managed": True}]

    remote = {"enabled": True, "allow_unsigned": True, "models_dir": str(models)}
    cfg = parse_config(
        {**BASE, "remote": {**remote, "model_public_key_file": str(public_key_file)}}, base_dir=tmp_path
    )
    RemoteCommands(
        cfg,
        Topics("edge", "lab", "gw-1"),
        tmp_path,
        str,
        check_reload=lambda **_: [],
        request_reload=lambda: None,
    )
    assert not leftover.exists()
    assert store.active_version("ecg-beat") == "1.1.0"
    store.install(bundle)  # the re-sent install goes through
    assert sorted(p.name for p in (models / "ecg-beat").iterdir()) == ["1.1.0", "1.2.0", "current"]


def test_the_next_install_removes_an_install_cut_off(
    tmp_path: Path, public_key_file: Path, make_bundle: BundleFactory
) -> None:
    models = tmp_path / "models"
    bundle = make_bundle("1.2.0")
    leftover = cut_off_install(models, public_key_file, bundle, tmp_path)
    ModelStore(models, public_key_file).install(bundle)
    assert not leftover.exists()
    assert sorted(p.name for p in (models / "ecg-beat").iterdir()) == ["1.2.0"]
