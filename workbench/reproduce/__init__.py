"""Running the recipes' notebooks and reading what they found.

* :mod:`~workbench.reproduce.notebooks` -- ``reproduce NAME|all``: papermill runs of the notebooks
  with validated parameters, progress on stderr, the comparison table;
* :mod:`~workbench.reproduce.table` -- that table, one row per ``summary.json``;
* :mod:`~workbench.reproduce.report` -- ``OUT/report.html`` and the cards' "Measured" blocks.
"""
from .notebooks import NotebookError, reproduce, resolve_params, run_notebook
from .report import update_papers, write_report
from .table import fmt_seconds, print_table, summary_row

__all__ = ["NotebookError", "fmt_seconds", "print_table", "reproduce", "resolve_params", "run_notebook",
           "summary_row", "update_papers", "write_report"]
