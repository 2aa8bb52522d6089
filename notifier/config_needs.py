"""What a command needs of the configuration's secrets, and what stands in for the rest.

``notifier tail`` reads Redis only; it must not fail because ``STORM_PASSWORD`` or
``WEBHOOK_SECRET`` is not in its environment. A command loads the configuration with the
``Needs`` it has; an unset ``${VAR}`` (without a default) in a section outside them is no error:

| where the variable is         | needed by                                            |
|-------------------------------|------------------------------------------------------|
| ``clusters[*].auth``          | commands that contact Storm (``snapshot``, ``run``)  |
| ``sinks[i]`` (any key)        | commands that deliver to that sink (``replay``, ...) |
| ``server.auth_token``         | ``run``                                              |

A secret key left unresolved holds an ``UnsetSecret`` (``notifier.unset``): masked like any
secret, and ``ConfigError`` naming the variable the moment something reads it. Any other key
keeps its text as written (``${STORM_USER}``): validated, never sent anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, get_args

from pydantic import BaseModel, SecretStr

from notifier.sinks.registry import BUILTIN_SINKS
from notifier.unset import UnsetSecret

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["ALL_SECRETS", "Deferred", "Loc", "Needs", "Unresolved"]

Loc: TypeAlias = tuple[str | int, ...]
"""A key's place in the document: ``("clusters", 0, "auth", "password")``."""

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Needs:
    """The secrets a command uses; an unset ``${VAR}`` anywhere else is left unresolved.

    ``storm``: ``clusters[*].auth``. ``sinks``: every sink's keys (True), none (False), or
    only those of the sinks named. ``server``: ``server.auth_token``. The default: all.
    """

    storm: bool = True
    sinks: bool | frozenset[str] = True
    server: bool = True

    @classmethod
    def redis_only(cls) -> Needs:
        """``tail``, ``dlq list|purge``, ``status``: Redis and nothing else."""
        return cls(storm=False, sinks=False, server=False)

    @classmethod
    def storm_only(cls) -> Needs:
        """``snapshot``: the Storm credentials, no sink's and no server's."""
        return cls(storm=True, sinks=False, server=False)

    @classmethod
    def sink(cls, name: str) -> Needs:
        """``replay``, ``dlq redrive``: the secrets of the one sink they deliver to."""
        return cls(storm=False, sinks=frozenset({name}), server=False)

    def uses_sink(self, name: object) -> bool:
        """Whether the secrets of the sink called ``name`` are needed."""
        return self.sinks if isinstance(self.sinks, bool) else name in self.sinks


ALL_SECRETS = Needs()
"""What a command needs by default: every secret (``run``, ``check-config``)."""


class Unresolved(Exception):  # noqa: N818 - a signal inside the expansion, never escapes it
    """An unset variable where ``Deferred.allows`` it: the value stays unresolved."""

    def __init__(self, variable: str) -> None:
        super().__init__(variable)
        self.variable = variable


class Deferred:
    """The unset ``${VAR}``s of one document outside a command's ``Needs``.

    A secret key of a sink holds an ``UnsetSecret`` at once (the sinks' shape checks skip it);
    any other key holds its text as written while the settings are validated, and a secret
    among those becomes an ``UnsetSecret`` after (``seal``): no check sees a placeholder, and
    no placeholder can be sent anywhere.
    """

    def __init__(
        self, needs: Needs, document: Mapping[str, Any], where: Callable[[Loc], str]
    ) -> None:
        self._needs = needs
        self._where = where
        items = document.get("sinks")
        items = items if isinstance(items, list) else []
        self._sinks: list[Mapping[str, Any]] = [i if isinstance(i, dict) else {} for i in items]
        self.found: dict[Loc, str] = {}

    def allows(self, loc: Loc) -> bool:
        """Whether an unset variable at ``loc`` may stay unresolved."""
        match loc:
            case ("clusters", int(), "auth", *_):
                return not self._needs.storm
            case ("server", "auth_token", *_):
                return not self._needs.server
            case ("sinks", int(index), str(), *_) if index < len(self._sinks):
                return not self._needs.uses_sink(self._sinks[index].get("name"))
        return False

    def stand_in(self, loc: Loc, text: str, variable: str) -> Any:
        """What ``loc`` holds while validated: its text, or an ``UnsetSecret``."""
        self.found[loc] = variable
        if loc[0] == "sinks" and _secret_key(self._sinks[int(loc[1])].get("type"), str(loc[2])):
            return UnsetSecret(variable, self._where(loc))
        return text

    def seal(self, settings: M, *, overridden: Mapping[Loc, str]) -> M:
        """Each secret left unresolved made an ``UnsetSecret`` (unless a variable overrode it)."""
        for loc, variable in self.found.items():
            if any(loc[: len(key)] == key for key in overridden):
                continue
            settings = _replace(settings, loc, _unusable(variable, self._where(loc)))
        return settings


def _unusable(variable: str, where: str) -> Callable[[Any], Any]:
    def change(old: Any) -> Any:
        return UnsetSecret(variable, where) if isinstance(old, SecretStr) else old

    return change


def _secret_key(kind: object, key: str) -> bool:
    """Whether ``key`` of a built-in sink ``kind`` holds secrets (of a plugin's: not known)."""
    factory = BUILTIN_SINKS.get(kind) if isinstance(kind, str) else None
    field = factory.settings_model.model_fields.get(key) if factory is not None else None
    return field is not None and _mentions_secret(field.annotation)


def _mentions_secret(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        return True
    return any(_mentions_secret(arg) for arg in get_args(annotation))


def _replace(node: Any, loc: Loc, change: Callable[[Any], Any]) -> Any:
    """``node`` with the value at ``loc`` changed (frozen models copied along the way)."""
    if not loc:
        return change(node)
    head, rest = loc[0], loc[1:]
    if isinstance(node, BaseModel) and isinstance(head, str) and head in type(node).model_fields:
        return node.model_copy(update={head: _replace(getattr(node, head), rest, change)})
    if isinstance(node, tuple) and isinstance(head, int) and head < len(node):
        return (*node[:head], _replace(node[head], rest, change), *node[head + 1 :])
    if isinstance(node, dict) and head in node:
        return {**node, head: _replace(node[head], rest, change)}
    return node
