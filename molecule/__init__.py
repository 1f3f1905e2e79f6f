"""Molecule: a control plane for AI-agent workspaces on Temporal."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("molecule")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
