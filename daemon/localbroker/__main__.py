"""``python -m daemon.localbroker start|stop|url --dir DIR``; see :mod:`daemon.localbroker.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
