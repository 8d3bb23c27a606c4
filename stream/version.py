"""The version of this Darkroom: what ``darkroom --version`` prints and ``darkroom_build_info`` exports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

UNKNOWN = "0+unknown"


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's), or ``0+unknown`` from a bare checkout."""
    try:
        return version("darkroom")
    except PackageNotFoundError:
        return UNKNOWN
