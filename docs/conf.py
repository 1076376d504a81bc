"""Sphinx configuration for Flask-Satchel's documentation (``make docs``).

The pages are Markdown, read by MyST-Parser, so the ones GitHub shows stay
readable there. No intersphinx: its inventories would have to be fetched
from the network at build time, and the build must work offline.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import sphinx.application
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # charts.py, next to this file

import charts  # noqa: E402 - needs the path above

project = "Flask-Satchel"
author = "The Flask-Satchel contributors"
copyright = "the Flask-Satchel contributors"
release = metadata.version("Flask-Satchel")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "README.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
#: Headings get anchors, so pages can link to a section: ``[…](configuration.md#store-keys)``.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

html_theme = "furo"
html_title = f"Flask-Satchel {release}"
html_static_path = ["_static"]
html_css_files = ["satchel.css"]
html_theme_options = {
    "source_repository": "",
    "navigation_with_keys": True,
}


class ProxyData(SphinxDirective):
    """``.. proxydata:: module.name TYPE``: a module attribute documented by its docstring, never touched.

    autodoc inspects the object to format a signature, and a Werkzeug proxy
    such as ``current_session`` raises "Working outside of request context"
    for any attribute asked of it outside a request. The docstring is read
    from the source instead, as autodoc reads it for any attribute.
    """

    required_arguments = 2

    def run(self) -> list[nodes.Node]:
        module, _, name = self.arguments[0].rpartition(".")
        docs = ModuleAnalyzer.for_module(module).find_attr_docs()
        lines = docs.get(("", name))
        if lines is None:
            raise self.error(f"{module}.{name} has no docstring")
        text = [f".. py:data:: {name}", f"   :module: {module}", f"   :type: {self.arguments[1]}", ""]
        text += [f"   {line}" if line else "" for line in lines]
        node = nodes.section()
        self.state.nested_parse(StringList(text, self.get_source_info()[0]), self.content_offset, node)
        return list(node.children)


def setup(app: sphinx.application.Sphinx) -> None:
    """Draw the performance page's charts and tables from ``bench/results/latest.json`` before reading pages."""
    app.add_directive("proxydata", ProxyData)
    app.connect("builder-inited", lambda _app: charts.build(HERE.parent / "bench" / "results" / "latest.json"))
