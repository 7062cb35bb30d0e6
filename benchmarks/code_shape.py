"""How the code is shaped: the figures issue 14 (one file per addition) is measured by.

Prints, for ``conserv_core/`` and ``app/``:

* the longest classes and functions (lines, from ``ast``);
* the lines per file;
* the method, architecture and system key literals outside their registries: string
  constants (not docstrings) equal to a registered key, in code other than the registry
  files (``methods.py``, ``models/__init__.py``, ``constraints.py``, each system's own
  file, and ``app/theme.py``'s style records). Each is a place where code asks for a key
  by name. ``presets.py`` (named experiments: which methods on which system) is data and
  is counted apart (so were the reproductions' protocols while they lived in the engine,
  before they moved to ``reproductions/``).
  ``--list`` prints where they are.
* the capability probes: ``hasattr(x, "name")`` and ``getattr(x, "name", default)``, each a
  place where code guesses what an object can do instead of asking what it declares
  (issue 30: a model declares its capabilities once, see ``conserv_core/models/base.py``).
  ``--list`` prints them too.

* the family branches: comparisons of a ``kind``, ``view_family`` or ``coords`` attribute
  with a string (``system.kind == "ode"``), each a place where code chooses by family
  instead of asking the part;
* the quantity-name literals (``"energy"``, ``"momentum"``, ...) outside the systems, each a
  place where code names a conserved quantity instead of reading a system's invariants.

And one check, which sets the exit status: a random draw from a global generator
(``torch.randn(...)`` without ``generator=``, ``torch.manual_seed``, ``np.random.rand``,
``random.random``) in ``conserv_core/`` or ``app/`` breaks "every draw comes from the run's
seed" (two runs in one process, or a server's threads, would share it): the script lists
each and exits 1. ``tests/test_code_shape.py`` plants one and sees it caught.

Usage::

    python benchmarks/code_shape.py
    python benchmarks/code_shape.py --list
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("conserv_core", "app")


REGISTRIES = {"conserv_core/methods.py", "conserv_core/models/__init__.py", "conserv_core/constraints.py",
              "app/theme.py"}
#: tables of named things (presets, the laws-by-method table): their keys are their content
DATA = {"conserv_core/presets.py", "conserv_core/laws.py"}


def registered_keys() -> dict[str, set[str]]:
    """key -> the files (relative to the root) that may name it: the registries, and for a
    system its own file."""
    from conserv_core import constraints, methods, models
    from conserv_core.systems import ALL_SYSTEMS

    keys: dict[str, set[str]] = {}
    for k in [*methods.ALL_METHODS, *models.ARCHITECTURES, *constraints.CONSTRAINTS]:
        keys.setdefault(k, set()).update(REGISTRIES)
    for k, cls in ALL_SYSTEMS.items():
        own = str(Path(__import__(cls.__module__, fromlist=["x"]).__file__).resolve().relative_to(ROOT))
        keys.setdefault(k, set()).update({own, "conserv_core/methods.py"})  # a method may name its systems
    return keys


def docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def is_probe(node: ast.AST) -> bool:
    """``hasattr(x, "name")`` or ``getattr(x, "name", default)``: a guess at a capability."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        return False
    return (node.func.id == "hasattr" and len(node.args) == 2) or (node.func.id == "getattr" and len(node.args) == 3)


#: torch functions that draw from torch's global generator unless given ``generator=``
TORCH_DRAWS = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal",
               "bernoulli", "multinomial", "poisson"}
#: calls that seed or draw from a process-wide generator whatever their arguments
GLOBAL_SEEDING = {("torch", "manual_seed"), ("torch", "seed")}
#: the attributes a family branch compares with a string
FAMILY_ATTRS = {"kind", "view_family", "coords"}
#: the conserved quantities' names (a system declares its own in ``invariants()``)
QUANTITIES = {"energy", "momentum", "angular_momentum", "mass", "charge"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def global_draw(node: ast.AST) -> str | None:
    """The name of a call that draws from (or seeds) a global generator, else None."""
    if not isinstance(node, ast.Call):
        return None
    name = _dotted(node.func)
    head, _, fn = name.rpartition(".")
    if (head, fn) in GLOBAL_SEEDING:
        return name
    if head == "torch" and fn in TORCH_DRAWS and not any(k.arg == "generator" for k in node.keywords):
        return name
    if head in ("np.random", "numpy.random") and fn not in ("default_rng", "Generator", "SeedSequence",
                                                           "PCG64", "Philox", "BitGenerator"):
        return name
    if head == "random" and fn not in ("Random", "SystemRandom"):
        return name
    return None


def family_branch(node: ast.AST) -> bool:
    """``x.kind == "ode"``, ``x.view_family != "bodies"``, ``x.coords in ("velocity",)``."""
    if not (isinstance(node, ast.Compare) and len(node.comparators) == 1):
        return False
    sides = [node.left, node.comparators[0]]
    attr = any(isinstance(x, ast.Attribute) and x.attr in FAMILY_ATTRS for x in sides)
    const = any(isinstance(x, ast.Constant) and isinstance(x.value, str)
                or isinstance(x, (ast.Tuple, ast.Set, ast.List)) and x.elts
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in x.elts) for x in sides)
    return attr and const


def global_draws_in(text: str) -> list[tuple[int, str]]:
    """(line, call) of every global draw in a module's source (what the check counts)."""
    return [(n.lineno, d) for n in ast.walk(ast.parse(text)) if (d := global_draw(n))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print every key literal outside its registry")
    ap.add_argument("--top", type=int, default=5, help="how many of the longest classes/functions")
    args = ap.parse_args()

    keys = registered_keys()
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    classes, functions, sizes, literals, probes = [], [], [], [], []
    branches, quantities, draws = [], [], []
    missing = sorted(f for f in REGISTRIES | DATA if not (ROOT / f).exists())
    if missing:
        raise SystemExit(f"code_shape.py names files that do not exist: {', '.join(missing)}")
    for path in files:
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        sizes.append((len(text.splitlines()), rel))
        tree = ast.parse(text)
        docs = docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in keys
                  and id(node) not in docs and rel not in keys[node.value]):
                literals.append((rel, node.lineno, node.value))
            elif is_probe(node):
                probes.append((rel, node.lineno, node.args[1].value))
            elif family_branch(node):
                branches.append((rel, node.lineno, ast.unparse(node)))
            elif (isinstance(node, ast.Constant) and node.value in QUANTITIES and id(node) not in docs
                  and not rel.startswith("conserv_core/systems/")):
                quantities.append((rel, node.lineno, node.value))
            if isinstance(node, ast.Call) and (d := global_draw(node)):
                draws.append((rel, node.lineno, d))

    print("longest classes:   " + "; ".join(f"{n} {w}" for n, w in sorted(classes, reverse=True)[: args.top]))
    print("longest functions: " + "; ".join(f"{n} {w}" for n, w in sorted(functions, reverse=True)[: args.top]))
    for pkg in PACKAGES:
        rows = sorted((n, f) for n, f in sizes if f.startswith(pkg + "/"))
        total = sum(n for n, _ in rows)
        print(f"{pkg}/: {len(rows)} files, {total} lines, largest " + ", ".join(f"{f} {n}" for n, f in rows[::-1][:4]))
    code = [x for x in literals if x[0] not in DATA]
    by_pkg = {pkg: sum(1 for f, _, _ in code if f.startswith(pkg + "/")) for pkg in PACKAGES}
    print(f"key literals outside the registries: {len(code)} in code "
          f"({', '.join(f'{p}/ {n}' for p, n in by_pkg.items())}), "
          f"{len(literals) - len(code)} in data ({', '.join(sorted(DATA))})")
    by_pkg = {pkg: sum(1 for f, _, _ in probes if f.startswith(pkg + "/")) for pkg in PACKAGES}
    print(f"capability probes (hasattr, getattr with a default): {len(probes)} "
          f"({', '.join(f'{p}/ {n}' for p, n in by_pkg.items())})")
    by_pkg = {pkg: sum(1 for f, _, _ in branches if f.startswith(pkg + "/")) for pkg in PACKAGES}
    print(f"family branches (kind/view_family/coords against a string): {len(branches)} "
          f"({', '.join(f'{p}/ {n}' for p, n in by_pkg.items())})")
    by_pkg = {pkg: sum(1 for f, _, _ in quantities if f.startswith(pkg + "/")) for pkg in PACKAGES}
    print(f"quantity-name literals outside the systems: {len(quantities)} "
          f"({', '.join(f'{p}/ {n}' for p, n in by_pkg.items())})")
    print(f"draws from a global generator: {len(draws)}")
    if args.list:
        for f, line, k in sorted(literals):
            print(f"  {f}:{line}  {k!r}")
        for f, line, name in sorted(probes):
            print(f"  probe {f}:{line}  {name!r}")
        for f, line, text in sorted(branches):
            print(f"  branch {f}:{line}  {text}")
        for f, line, name in sorted(quantities):
            print(f"  quantity {f}:{line}  {name!r}")
    for f, line, name in sorted(draws):
        print(f"  GLOBAL DRAW {f}:{line}  {name}(...): take a generator seeded from the run's seed")
    if draws:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
