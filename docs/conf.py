"""Sphinx configuration of the scalable documentation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

project = "scalable"
author = "The scalable developers"
copyright = "2026, The scalable developers"  # noqa: A001 - Sphinx's own setting name
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
exclude_patterns = ["_build"]
nitpicky = False
suppress_warnings = ["ref.python"]
