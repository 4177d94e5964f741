"""The installed retouch version, as recorded in every recipe."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("retouch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
