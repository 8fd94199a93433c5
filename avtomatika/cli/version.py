"""``avtomatika --version``: the installed distribution's version, read from
its metadata so it can never disagree with what pip installed."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


def package_version() -> str:
    """The version of the installed ``avtomatika`` distribution; ``unknown``
    when the package runs from a source tree that was never installed."""
    try:
        return version("avtomatika")
    except PackageNotFoundError:
        return "unknown"
