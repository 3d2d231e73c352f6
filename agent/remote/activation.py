"""Changes to the managed models store, checked as a start would check them, one at a time.

An activation swaps `current`, then checks the config file with the new link in place (`check_reload`:
the start-up's own loading, so the model is read by the real runtime and its input and output shapes
are checked against the card), whatever the command's `reload` says: a version a reload would refuse
would also stop the next start (and `check-config` before it), and with it every detector of every
patient, so it never stays current. A refusal puts the previous link back. An install with `activate`
does both under one hold of the lock; when its activation is refused the version stays installed (it
is valid and signed, only not loadable here) and the refusal says so (`installed`).

Each change runs whole in one worker thread under the store's lock (`ModelStore.locked`), so two
commands never check each other's link and every answer matches the disk it leaves. Once a change is
accepted with a reload to follow, or the session ends (`closing`), a change still waiting for the lock
is refused ("busy", nothing changed) rather than made: the reload reads the link (`try_reload`, on the
loop, without this lock) and must find the one just checked, not one another command is checking.
Should that reload be refused after all (the config file was edited since the check), the session
goes on: the session tells `reload_refused`, which logs that the activated version is current but not
running and takes changes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.inference.managed import strict
from agent.remote.bundles import ModelStore
from agent.remote.envelope import CommandRefusedError

log = logging.getLogger(__name__)


class ModelChanges:
    """Installs and activations of `store`, each checked by `check_reload` (problems, one line each)."""

    def __init__(self, store: ModelStore, check_reload: Callable[[], list[str]]) -> None:
        self.store = store
        self._check_reload = check_reload
        self.closing = False  # set by the session's end (plain bools: read under the store's lock)
        # An accepted change asked for a reload: the link must hold still. Its version, for the line
        # `reload_refused` writes should the reload not happen.
        self._reload_pending: str | None = None
        self._reload_requested = False  # and the reload was asked for (loop thread)

    def activate(self, name: object, version: object, reload: bool) -> dict[str, Any]:
        """Point `current` at `version` if the config then loads; blocking (a worker thread)."""
        with self.store.locked():
            self._open()
            return self._activate(name, version, reload)

    def install(self, bundle: object, activate: bool, reload: bool) -> dict[str, Any]:
        """Install a bundle and, if asked, activate it, as one change; blocking (a worker thread)."""
        with self.store.locked():
            self._open()
            card = self.store.install(bundle)
            log.info("remote: model installed (%s)", card.version)
            result: dict[str, Any] = {"name": card.name, "version": card.version, "installed": True}
            if not activate:
                return result
            try:
                result["activation"] = self._activate(card.name, card.version, reload)
            except CommandRefusedError as exc:
                raise CommandRefusedError(
                    exc.code,
                    f"installed, but not activated: {exc.message}",
                    exc.problems,
                    detail={"name": card.name, "version": card.version, "installed": True},
                    reason=f"installed, but not activated: {exc.reason}",
                    security_event=exc.security_event,
                ) from None
            return result

    def reload_requested(self) -> None:
        """The reload an accepted change asked for is on its way (loop thread)."""
        self._reload_requested = True

    def reload_refused(self) -> None:
        """The session's reload was refused (`Agent.try_reload`: the config file changed since the
        check, or a model did), so the session goes on (loop thread). A change whose reload that was
        is current on disk but not running: say so, and take changes again. (A refused SIGHUP reload
        between a change's acceptance and its request is not its reload: that one is still to come.)"""
        if not self._reload_requested:
            return
        version, self._reload_pending, self._reload_requested = self._reload_pending, None, False
        if version is not None:
            log.error(
                "remote: model version %s is current but not running: the reload after its activation "
                "was refused (see the reload's lines); the running detectors keep the version they "
                "loaded until a reload or start succeeds",
                version,
            )

    def _open(self) -> None:
        if self._reload_pending is not None or self.closing:
            raise CommandRefusedError(
                "busy", "a reload or stop is under way; nothing was changed: send it again after it"
            )

    def _activate(self, name: object, version: object, reload: bool) -> dict[str, Any]:
        previous = self.store.activate(name, version)
        assert isinstance(name, str)  # activate checked it
        with strict():  # the version itself must load: its predecessor loading proves nothing
            problems = self._check_reload()
        if problems:
            # Put back; the refusal's log line, with its reason, is the command's (agent.remote.commands).
            self.store.restore(name, previous)
            raise CommandRefusedError(
                "refused", "the config file was refused with this version; the previous one stays", problems
            )
        self.store.keep_previous(name, previous, str(version))
        log.info("remote: model activated")
        if reload:
            self._reload_pending = str(version)
        return {"name": name, "version": version, "previous": previous, "reloading": reload}
