"""Tables: the paper's numbers (``vcr.tables.paper``, data in ``paper_numbers.yaml``) and the one
renderer (``vcr.tables.render``: Markdown, LaTeX, CSV). Import the module you need; this package
imports nothing (the rendering CLI stays cheap)."""
