"""The door-bridge daemon: the imperative shell around the verifier."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("door-bridge")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
