"""Import-linter contract types of this project (``.importlinter`` names them).

``pure`` is an allow-list, not a deny-list: a pure core (data in, data out; DESIGN.md
"Layout") may import only other pure cores of the project and the standard-library modules
named in ``allowed``. Anything else - an I/O library, a third-party package, or one of the
project's own adapter modules (``common.kube``, ``speaker.l2``, ``ingress.haproxy``, ...) -
breaks the contract, so a module added tomorrow is covered without editing a list.

Import-linter reads every import statement, relative ones and those inside functions
included (its graph comes from grimp). What it cannot see is an import by name at run time
(``importlib.import_module``, ``__import__``): ``by_name`` rejects those calls in the
packages it covers, so no arrow can hide from the other contracts.
"""

from __future__ import annotations

import ast
import importlib.util
from typing import Any

from importlinter import Contract, ContractCheck, fields, output


class PureContract(Contract):
    """Modules of ``pure_packages`` import only each other and the ``allowed`` stdlib."""

    pure_packages = fields.ListField(subfield=fields.StringField())
    allowed = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        pure = [str(p) for p in self.pure_packages]  # type: ignore[attr-defined]
        allowed = {str(a) for a in self.allowed}  # type: ignore[attr-defined]

        def is_pure(module: str) -> bool:
            return any(module == p or module.startswith(p + ".") for p in pure)

        problems: list[str] = []
        for package in pure:
            for module in sorted(graph.find_descendants(package) | {package}):
                for imported in sorted(graph.find_modules_directly_imported_by(module)):
                    if is_pure(imported) or imported in allowed:
                        continue
                    for d in graph.get_import_details(importer=module, imported=imported):
                        problems.append(f"{module}:{d['line_number']} imports {imported} "
                                        f"({d['line_contents'].strip()})")
        return ContractCheck(kept=not problems, metadata={"problems": problems})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["problems"]:
            output.print_error(f"- {line}")
            output.new_line()


class ByNameContract(Contract):
    """No module of ``packages`` imports anything by name at run time."""

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        problems: list[str] = []
        for package in [str(p) for p in self.packages]:  # type: ignore[attr-defined]
            for module in sorted(graph.find_descendants(package) | {package}):
                problems += _dynamic_imports(module)
        return ContractCheck(kept=not problems, metadata={"problems": problems})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["problems"]:
            output.print_error(f"- {line}")
            output.new_line()


def _dynamic_imports(module: str) -> list[str]:
    """``__import__(...)`` and ``import_module(...)`` calls, which no import graph sees."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return []
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                f, ast.Attribute) else ""
            if name in ("__import__", "import_module", "spec_from_file_location",
                        "module_from_spec"):
                found.append(f"{module}:{node.lineno} imports by name at run time ({name})")
    return found
