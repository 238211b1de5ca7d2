"""Sphinx configuration: the dask-adadamp site (pydata theme, numpydoc API
reference, the Markdown pages through MyST, a gallery executed at build time).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""
import os
import warnings

import dask_adadamp

project = "dask-adadamp"
author = "the dask-adadamp developers"
copyright = "2026, the dask-adadamp developers"
version = release = dask_adadamp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# examples/ holds the gallery's sources; auto_examples/ its pages.
# search.md would be search.html, which Sphinx's search page overwrites:
# searches.md includes it.
exclude_patterns = ["_build", "examples", "search.md"]

# --- API reference -------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
# numpydoc's member tables would list every inherited skorch method; the
# autosummary class template lists the methods instead.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
}
# Offline builds (CI here has no internet) must not warn about the
# inventories: intersphinx is only used when DOCS_INTERSPHINX=1.
if os.environ.get("DOCS_INTERSPHINX") != "1":
    intersphinx_mapping = {}

# --- Markdown pages --------------------------------------------------------
myst_heading_anchors = 3  # links such as dampers.md#plotting-a-fit

# --- gallery ---------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    # Every example starts and closes its own small cluster.
    "reset_modules": ("matplotlib",),
    "abort_on_example_error": True,
}

# Examples run in this process: matplotlib draws off screen.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message="Port 8787 is already in use")
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg")

# --- HTML ------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "dask-adadamp"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []


def _benchmark_links(app, docname, source):
    """The Markdown pages link the benchmarks' result pages beside docs/
    (``../benchmarks/results/*.md``), which GitHub shows but the site does
    not hold: on the site they become downloads of those files (MyST's
    ``path:`` links), and the pages themselves stay as they are."""
    source[0] = source[0].replace("](../benchmarks/", "](path:../benchmarks/")


def setup(app):
    app.connect("source-read", _benchmark_links)
