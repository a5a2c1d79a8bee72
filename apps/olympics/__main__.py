"""``python -m apps.olympics`` - see :mod:`apps.olympics.cli`."""

import sys

from apps.olympics.cli import main

sys.exit(main())
