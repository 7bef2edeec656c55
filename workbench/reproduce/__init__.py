"""Running the recipes' notebooks and reading what they found.

* :mod:`~workbench.reproduce.notebooks` -- ``reproduce NAME|all``: papermill runs of the notebooks
  with validated parameters, progress on stderr, the comparison table;
* :mod:`~workbench.reproduce.table` -- that table, one row per ``summary.json``;
* :mod:`~workbench.reproduce.report` -- ``OUT/report.html`` and the cards' "Measured" blocks;
* :mod:`~workbench.reproduce.study` -- ``reproduce NAME --seeds 0-4``: seeds parsed, paired
  statistics over seeds, ``OUT/NAME/study.json`` and its table;
* :mod:`~workbench.reproduce.compact` -- executed notebooks made static: every figure a PNG, no
  widget state (nbconvert and code-hosting viewers show every figure; a kernel brings the views back).
"""
from .compact import compact_notebook
from .notebooks import NotebookError, reproduce, resolve_params, run_notebook
from .report import update_papers, write_report
from .study import build_study, paired_stats, parse_seeds
from .table import fmt_seconds, print_table, summary_row

__all__ = ["NotebookError", "build_study", "compact_notebook", "fmt_seconds", "paired_stats", "parse_seeds", "print_table", "reproduce",
           "resolve_params", "run_notebook", "summary_row", "update_papers", "write_report"]
