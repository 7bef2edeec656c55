"""``python -m workbench.recipes``: regenerate every notebook's parameters cell from its ``Params``
(with the ``smoke`` values of ``papers/NAME/smoke.yaml``)."""
from . import ORDER, notebook_defaults, notebook_path, params_class
from .base import write_parameters_cell

if __name__ == "__main__":
    for name in ORDER:
        changed = write_parameters_cell(notebook_path(name), params_class(name), notebook_defaults(name))
        print(f"{name}: {'rewritten' if changed else 'unchanged'}")
