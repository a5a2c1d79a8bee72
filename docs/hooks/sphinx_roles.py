"""griffe extension: the Sphinx roles of eventbus's docstrings read as code in the API reference.

The docstrings are written for ``help()`` and editors as much as for the site, and name other
objects the Sphinx way (``:class:`~eventbus.Runner```, ``:func:`compose```). Markdown has no such
roles: each becomes a code span of the name as Sphinx would show it (the last component after a
``~``), rather than raw role syntax on the page.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")


def plain(docstring: str) -> str:
    return ROLE.sub(lambda m: f"`{m.group(2).rpartition('.')[2] if m.group(1) else m.group(2)}`", docstring)


class SphinxRoles(Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
