"""``python -m apps.broadcast`` - see :mod:`apps.broadcast.cli`."""

import sys

from apps.broadcast.cli import main

sys.exit(main())
