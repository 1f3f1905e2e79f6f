"""The installed version of the project (one source for the API, the CLI and the agent)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("molecule")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
