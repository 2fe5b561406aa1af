"""`python -m bridge.cli …`, the same as the `door-bridge` script."""

import sys

from bridge.cli.main import main

sys.exit(main())
