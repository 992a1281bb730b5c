"""Tables: the paper's numbers (data) and the one renderer (Markdown, LaTeX, CSV).

Re-exported lazily so that ``import vcr.tables`` does not pay for pandas/tabulate/yaml.
"""

from importlib import import_module

_EXPORTS = {
    "load_paper_numbers": "vcr.tables.paper",
    "paper_value": "vcr.tables.paper",
    "table_meta": "vcr.tables.paper",
    "column_meta": "vcr.tables.paper",
    "PAPER_NUMBERS_PATH": "vcr.tables.paper",
    "TABLES": "vcr.tables.paper",
    "build_cells": "vcr.tables.render",
    "load_spec": "vcr.tables.render",
    "validate_spec": "vcr.tables.render",
    "render_table": "vcr.tables.render",
    "write_outputs": "vcr.tables.render",
    "unmatched_records": "vcr.tables.render",
    "render_markdown": "vcr.tables.render",
    "render_latex": "vcr.tables.render",
    "render_csv": "vcr.tables.render",
    "NOT_RUN": "vcr.tables.render",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vcr.tables' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
