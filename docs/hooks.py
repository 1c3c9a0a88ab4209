"""MkDocs hook of the documentation site (``hooks:`` in mkdocs.yml): renders the Sphinx roles of the docstrings.

The docstrings of mmh and mmh_ext cross-reference with Sphinx roles (``:func:`rad_loss```), which Markdown does not
know: mkdocstrings would print ``:func:`` before the name. This hook drops the role and keeps the name as code, so the
API pages read as the source does. It changes no link and needs no import of mmh.
"""

from __future__ import annotations

import re
from typing import Any

#: A Sphinx role (``:func:``, ``:py:class:``, ...) directly before the inline code Markdown made of its target.
_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const|term|ref):(?=<code>)")


def strip_roles(html: str) -> str:
    """``:func:<code>x</code>`` -> ``<code>x</code>``; other text is left as it is."""
    return _ROLE.sub("", html)


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs event: every page's HTML after Markdown (and mkdocstrings) rendered it."""
    return strip_roles(html)
