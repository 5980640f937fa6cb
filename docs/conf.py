"""Sphinx configuration of the course website (``python3 course.py site``; see course_utils/instructor/site.py).

The site is built from a copy of this folder under ``build/site-src/`` that also holds the executed lessons
(``lessons/``) and the pages generated from the run (results, times, claims, benchmark), never from the
notebooks in ``notebooks/``: nothing is executed here (``nb_execution_mode = "off"``).
Everything a page loads is in the site itself (MathJax included), so it reads offline.
"""
import json
from pathlib import Path

# what the build knows about the course (written by course_utils/instructor/site.py): its repository's address
COURSE = json.loads((Path(__file__).parent / "course_site.json").read_text())

project = "Deep metric learning, hands-on"
author = "The course's authors"
copyright = "the course's authors; code MIT, text CC BY 4.0"

extensions = ["myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the lessons come executed by course.py run
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN: the lessons' saved outputs are static pictures
nb_merge_streams = True
exclude_patterns = ["_build", "lessons/downloads/**", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

smartquotes = False  # the text as the lessons wrote it (the claims page is compared with the claims' own text)

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_show_sourcelink = False
html_theme_options = {
    "repository_url": COURSE["repository"],
    "use_repository_button": True,  # a link to GitHub in the header (followed only when online)
    "show_toc_level": 2,
    "use_download_button": False,  # each lesson has its own download link, to the notebook without outputs
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
# MathJax 3 from the sphinx-mathjax-offline package, copied into _static/mathjax by the build: no CDN. Its SVG
# output draws the glyphs from the script itself, so no web font is fetched either.
mathjax_path = "mathjax/tex-svg.js"
html_context = {"default_mode": "light"}  # the theme logs a console error when no mode is set
