"""A secret whose ``${VAR}`` was not set, for a command that does not use it.

``notifier tail`` reads Redis only: it has no use for the Storm password or a webhook secret,
and must not fail because they are not in its environment. The loader (``config.Needs``) puts
an ``UnsetSecret`` where such a secret would be. It is a ``SecretStr`` that masks like one and
raises ``ConfigError`` naming the variable the moment anything reads its value, so a command
that turns out to need it after all fails with the reason instead of sending a placeholder.

Validators that check a secret's shape let it through unchecked (``is_unset``).
"""

from __future__ import annotations

from pydantic import SecretStr

from notifier.errors import ConfigError

__all__ = ["UnsetSecret", "is_unset"]


class UnsetSecret(SecretStr):
    """A secret left unresolved: ``get_secret_value`` raises ``ConfigError``."""

    def __init__(self, variable: str, where: str) -> None:
        super().__init__("")
        self.variable = variable
        self.where = where

    def get_secret_value(self) -> str:
        """Never a value: the error says which variable to set."""
        raise ConfigError(
            f"{self.where}: environment variable {self.variable} is not set (this command needs it)"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnsetSecret) and (other.variable, other.where) == (
            self.variable,
            self.where,
        )

    def __hash__(self) -> int:
        return hash((UnsetSecret, self.variable, self.where))

    def __repr__(self) -> str:
        return f"UnsetSecret({self.variable!r})"


def is_unset(value: object) -> bool:
    """Whether ``value`` is a placeholder for an unset variable (validators skip it)."""
    return isinstance(value, UnsetSecret)
