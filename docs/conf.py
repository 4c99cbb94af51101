"""Sphinx configuration of the qallegro documentation (`make docs`; warnings are errors there)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the package from the checkout, also without `pip install -e`

project = "qallegro"
author = "the qallegro authors"
copyright = "2026, the qallegro authors"
try:
    from importlib.metadata import version as _version

    release = _version("qallegro")
except Exception:  # not installed: the docs still build from the checkout
    release = ""
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]
# No intersphinx: the documentation builds offline.

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# `name` in a docstring (single backticks) is a reference to a Python object where one is documented and
# inline code otherwise.
default_role = "py:obj"

# --- API reference: one page per module, found by walking the package (new modules appear by themselves) ---
autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = False  # a package's re-exports are documented once, in their own module
autosummary_ignore_module_all = True

autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "member-order": "bysource",
    "ignore-module-all": True,
}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = False  # flax / optuna base-class docstrings are not ours to render
autoclass_content = "class"

# Google-style docstrings (Args:, Returns:, Raises:, Attributes:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # Attributes: as field lists, not as duplicate attribute entries
napoleon_use_rtype = False

# --- HTML ---
html_theme = "alabaster"
html_title = "qallegro"
html_theme_options = {
    "description": "Allegro and its quantum-classical QDI hybrid in JAX",
    "fixed_sidebar": True,
    "page_width": "1200px",
    "sidebar_width": "260px",
}
html_static_path = []


def _reread_everything(app, env, added, changed, removed):
    """Re-read every page on every build: autodoc pages depend on the package's docstrings, which Sphinx does
    not track, so an incremental build would hide their warnings (``make docs`` treats warnings as errors)."""
    return sorted(env.found_docs)


def setup(app):
    app.connect("env-get-outdated", _reread_everything)
