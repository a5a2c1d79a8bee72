"""The eventbus benchmark suite: every contender in its own process, against private redis-servers.

Run it with ``python -m benchmarks`` (see README.md). Nothing here is part of the pytest suite.
"""
