"""Sphinx configuration of durable's documentation site.

Build it with warnings as errors (what CI and ``tox -e docs`` run)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Pages are Markdown (MyST). Every fenced ``python`` block of every page, and
every ``console`` block, is executed by ``tests/test_docs.py``; a block that
must not run is preceded by ``<!-- not-run: reason -->`` (see that file).
Nothing here fetches from the network: no intersphinx mapping.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import durable

project = "durable"
author = "The durable authors"
copyright = "2026, The durable authors"
release = durable.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings down to level 4, so `[text](cli.md#worker)` and
# `[text](journal-v1.md#11-reading-and-recovery)` resolve (and are checked).
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc: document what the docstrings say, in source order, with type hints
# in the description rather than in long signatures.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True}

# Our docstrings are Google style (Args:, Raises:, Returns:, Attributes:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"durable {release}"
html_static_path: list[str] = []
pygments_style = "friendly"


def _drop_builtin_type_docstrings(app, what, name, obj, options, lines):
    """A constant has no docstring of its own: ``durable.lowlevel.HEADER_SIZE`` (an
    ``int``), ``sim.DISK_FAULTS`` (a ``tuple``) or ``EVENT_TYPES`` (a ``dict``) would
    show the docstring of its builtin type (and ``dict``'s is not valid reST). Their
    ``#:`` comments sit in the private module that defines them, where autodoc does
    not look for a re-exported name; the pages describe them instead."""
    inherited = type(obj).__module__ == "builtins" and obj.__doc__ == type(obj).__doc__
    if what in ("data", "attribute") and inherited:
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _drop_builtin_type_docstrings)
