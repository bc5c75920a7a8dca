"""The one error hierarchy of vla_ros.

Every message says what was expected, what arrived, where, and what to do about it:
these errors reach robot operators, not only developers.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VlaRosError(Exception):
    """Base class of every error vla_ros raises on purpose."""


class ConfigError(VlaRosError):
    """A configuration file or value is invalid. Raised at start-up, never mid-motion."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = ", ".join(part for part in (source, f"key '{key}'" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


class ObservationError(VlaRosError):
    """An observation (joint state, image, instruction) cannot be used. The message is dropped and counted."""


class PolicyError(VlaRosError):
    """A policy failed to load or to produce a valid action chunk."""


class MissingDependencyError(VlaRosError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed: "
            f"pip install 'vla_ros[{extra}]'"
        )


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Valid choices: a, b, c (did you mean 'b'?)' — appended to errors about unknown names."""
    choices = sorted(choices)
    hint = f" Valid choices: {', '.join(choices)}." if choices else ""
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        hint += f" Did you mean '{close[0]}'?"
    return hint


def parse_choices(text: str, valid: list[str], *, option: str) -> list[str]:
    """The comma-separated names in `text`, each one of `valid`, else an error naming `option`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{option} is empty: give one or more of {valid}, comma-separated")
    for item in items:
        if item not in valid:
            raise ConfigError(f"{option}: unknown value '{item}'." + did_you_mean(item, valid))
    return items
