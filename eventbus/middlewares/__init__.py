"""Middleware shipped with eventbus, one small module each (see :mod:`eventbus.middleware`).

- :func:`~eventbus.middlewares.timeout.timeout`: fail an attempt that overruns a deadline;
- :func:`~eventbus.middlewares.idempotent.idempotent`: skip a message whose key was handled already;
- :mod:`eventbus.middlewares.tracing`: OpenTelemetry spans (needs ``eventbus[otel]``; imported on
  its own, so the others work without OpenTelemetry installed).
"""

from eventbus.middlewares.idempotent import idempotent
from eventbus.middlewares.timeout import HandlerTimeout, timeout

__all__ = ["HandlerTimeout", "idempotent", "timeout"]
