"""The supplement's Tables 1-7 as runnable rows (``tfclip-reid paper``; docs/reproducing.md).

``tables`` holds the rows (recipe, options, the paper's numbers, requirements); ``commands`` builds their
configs and models, runs them and compares the results with the paper.
"""
from .commands import (
    DEFAULT_LOG_DIR, PaperError, compare, list_rows, row_complexity, row_config, row_entry, run_dir, run_row,
)
from .tables import (
    DATASET_SHAPES, REQUIREMENTS, ROWS, TABLES, PaperRow, Requirement, equivalent_rows, find_row, find_rows,
)

__all__ = [
    "DATASET_SHAPES", "DEFAULT_LOG_DIR", "PaperError", "PaperRow", "REQUIREMENTS", "ROWS", "Requirement", "TABLES",
    "compare", "equivalent_rows", "find_row", "find_rows", "list_rows", "row_complexity", "row_config",
    "row_entry", "run_dir", "run_row",
]
