"""door-bridge's operator tools: the command line (`main`), the demo and `doctor`.

Kept apart from the daemon, as gpiozero keeps its CLI in a package of its own: the service never
imports its operator tools, and a command loads only the layers it needs.
"""

from bridge.cli.main import main

__all__ = ["main"]
