"""``python benchmarks/run.py`` works like ``python -m benchmarks`` from anywhere."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.suite import main

sys.exit(main())
