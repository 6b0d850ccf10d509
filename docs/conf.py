"""Sphinx configuration for syslet-compat (MyST Markdown + autodoc)."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # `import uring_shim` / `import compat` from the tree

project = "syslet-compat"
author = "syslet-compat developers"
copyright = "2025, syslet-compat developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
master_doc = root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "requirements*"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "alabaster"
html_title = "syslet-compat"

# Both packages must import: autodoc renders their API pages from the live
# modules.  An ImportError here stops the build with that error (a
# configuration error, exit status 2), rather than leaving a page empty.
import ctypes  # noqa: E402

import compat  # noqa: E402,F401
import uring_shim  # noqa: E402,F401


def _ctype_name(t):
    """A field's ctypes type as Python spells it (``c_void_p * 6``).  ctypes
    aliases fixed-width names (``c_uint64`` is ``c_ulong`` here), so the
    byte column says the width."""
    if issubclass(t, ctypes.Array):
        return f"{_ctype_name(t._type_)} * {t._length_}"
    return t.__name__


def _struct_fields(app, what, name, obj, options, lines):
    """Appends a field table (offset, field, ctypes type, bytes) to the docstring of
    every ctypes structure autodoc renders: the fields are the API of the
    raw layer, and autodoc does not list ctypes fields by itself."""
    if what != "class" or not isinstance(obj, type) or \
            not issubclass(obj, (ctypes.Structure, ctypes.Union)):
        return
    rows = []
    for fname, ftype, *_ in obj._fields_:
        f = getattr(obj, fname)
        rows += [f"   * - {f.offset}", f"     - ``{fname}``",
                 f"     - ``{_ctype_name(ftype)}``", f"     - {f.size}"]
    lines += ["", f"Fields ({ctypes.sizeof(obj)} bytes):",
              "", ".. list-table::", "   :header-rows: 1", "",
              "   * - offset", "     - field", "     - ctypes type", "     - bytes", *rows, ""]


def setup(app):
    app.connect("autodoc-process-docstring", _struct_fields)
