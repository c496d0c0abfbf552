#!/usr/bin/env python3
"""Check the import graph of src/siproc against the layers of DESIGN.md section 1.

Usage: python3 scripts/check_imports.py [SRC_DIR]   (default: src next to this script)
Prints the layering it enforces, then every violation; exits 1 if there is one.

Two rules:

1. **Layers.** A module may import its own component and any component of a lower layer. An
   import of a higher layer is an upward import; an import of another component of the *same*
   layer is one too (siblings stay independent: `sip` and `media` both build on `sdp` and know
   nothing of each other; `config` reads the environment without knowing the sockets of `net`).
2. **No cycle inside `calls/`.** The call layer's modules form a tree of helpers under the call
   and the phone, so that each can be read and tested alone.

Imports inside ``if TYPE_CHECKING:`` count for both rules and are listed separately. A
type-only import does not run, but it is still a dependency: the module cannot be understood
(or type-checked) without the other one, and issue 9's "9-file cycle around calls/call.py" is
made of exactly such imports (helpers that take a ``call: Call``). Imports inside functions
count too (a late import hides a dependency; it does not remove it).

How modules are read: with `ast`, never imported. ``from a.b import c`` is an edge to the
module ``a.b.c`` when that is a module of the tree, else to ``a.b``; relative imports are
resolved against the importing package. Only edges between modules of the tree are checked.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "siproc"

# Lowest first. Each layer is a tuple of components; a component is a subpackage or a module of
# the package ("" is the package itself: `from siproc import __version__`).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "escaping", "logs"),  # helpers every layer may use; pure, no siproc imports but these
    ("sdp",),  # sans-I/O SDP model and offer/answer
    ("sip", "media"),  # sans-I/O SIP; RTP/RTCP, codecs, jitter, mixer (both use sdp)
    ("config",),  # environment -> frozen Config: pure, below the edges that read it
    ("net",),  # asyncio edges: sockets, the media clock, workers
    ("calls",),  # handlers, calls, the phone
    ("cli", "sim", "handler"),  # entry points: siproc, siproc-sim, and the handler kit
    ("__main__",),  # `python -m siproc`
)
# Components of one layer that may import each other, lower one first: the helpers are one
# component in spirit (logs escapes control characters with escaping's table).
SAME_LAYER_ALLOWED: frozenset[tuple[str, str]] = frozenset({("logs", "escaping")})

# The subpackage in which no cycle is allowed.
ACYCLIC = "calls"

# Import edges tolerated inside a cycle in calls/: none. Issue 9 removed the cycle around
# calls/call.py (its helpers see the call as a Protocol: services.CallView, or a smaller one of
# their own) and around calls/phone.py (account.AccountServices, monitoring.MonitoredPhone).
# Keep it empty: a new helper that needs the call takes a Protocol of what it uses.
KNOWN_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    imported: str
    line: int
    type_only: bool  # inside `if TYPE_CHECKING:`

    def __str__(self) -> str:
        kind = " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.importer} -> {self.imported}  (line {self.line}){kind}"


def module_names(src: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` below ``src``: dotted name -> file."""
    names: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    match test:
        case ast.Name(id="TYPE_CHECKING") | ast.Attribute(attr="TYPE_CHECKING"):
            return True
    return False


_Statement = ast.Import | ast.ImportFrom


def _walk(nodes: Iterable[ast.AST], type_only: bool) -> Iterator[tuple[_Statement, bool]]:
    """Every import statement in or below ``nodes`` (module level, in functions, in classes),
    with whether it sits in an ``if TYPE_CHECKING:`` branch."""
    for node in nodes:
        if isinstance(node, _Statement):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, True)
            yield from _walk(node.orelse, type_only)
        else:
            yield from _walk(ast.iter_child_nodes(node), type_only)


def _resolve(name: str, stmt: _Statement, modules: Mapping[str, Path]) -> list[str]:
    """The modules of the tree that ``stmt`` in module ``name`` imports."""
    if isinstance(stmt, ast.Import):
        targets = [alias.name for alias in stmt.names]
        return [_known(t, modules) for t in targets if _known(t, modules)]
    base = stmt.module or ""
    if stmt.level:
        is_package = modules[name].name == "__init__.py"
        parts = name.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - (stmt.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    found = []
    for alias in stmt.names:
        sub = f"{base}.{alias.name}"
        target = sub if sub in modules else _known(base, modules)
        if target:
            found.append(target)
    return found


def _known(dotted: str, modules: Mapping[str, Path]) -> str:
    """``dotted`` or its nearest enclosing module that is in the tree; "" if none."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return ""


def collect_imports(src: Path, package: str = PACKAGE) -> list[Import]:
    """The edges between modules of ``package`` (self-imports left out)."""
    modules = module_names(src, package)
    edges: set[Import] = set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for stmt, type_only in _walk(tree.body, False):
            for target in _resolve(name, stmt, modules):
                if target != name:
                    edges.add(Import(name, target, stmt.lineno, type_only))
    return sorted(edges, key=lambda e: (e.importer, e.imported, e.line))


def component(module: str, package: str = PACKAGE) -> str:
    """``siproc.sip.message`` -> ``sip``; ``siproc`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(
    edges: Iterable[Import],
    layers: Sequence[Sequence[str]] = LAYERS,
    same_layer_allowed: frozenset[tuple[str, str]] = SAME_LAYER_ALLOWED,
) -> list[str]:
    """One line per import of a higher layer, or of a sibling component of the same layer; a
    module of a component that no layer names is a violation too (add it to a layer)."""
    rank = {c: i for i, layer in enumerate(layers) for c in layer}
    problems = []
    for e in edges:
        src, dst = component(e.importer), component(e.imported)
        if src == dst:
            continue
        for c, m in ((src, e.importer), (dst, e.imported)):
            if c not in rank:
                problems.append(f"{m}: component {c!r} is in no layer (add it to LAYERS)")
        if src not in rank or dst not in rank:
            continue
        if rank[dst] > rank[src]:
            problems.append(f"upward import: {e} [{src or PACKAGE} -> {dst}]")
        elif rank[dst] == rank[src] and (src, dst) not in same_layer_allowed:
            problems.append(f"sibling import: {e} [{src or PACKAGE} -> {dst}, same layer]")
    return sorted(set(problems))


def cycles(edges: Iterable[Import], inside: str) -> list[list[str]]:
    """The strongly connected components (two modules or more, or a module importing itself)
    of the graph restricted to modules below ``inside`` (e.g. ``siproc.calls``); each sorted."""
    graph: dict[str, set[str]] = {}
    prefix = inside + "."
    for e in edges:
        if e.importer.startswith(prefix) and e.imported.startswith(prefix):
            graph.setdefault(e.importer, set()).add(e.imported)
            graph.setdefault(e.imported, set())
    # Tarjan's algorithm, iterative (no recursion limit on a large package).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    scc.append(member)
                    if member == node:
                        break
                if len(scc) > 1 or node in graph[node]:
                    found.append(sorted(scc))
    return sorted(found)


def check(
    edges: Sequence[Import],
    *,
    layers: Sequence[Sequence[str]] = LAYERS,
    acyclic: str = f"{PACKAGE}.{ACYCLIC}",
    known_cycle_edges: frozenset[tuple[str, str]] = KNOWN_CYCLE_EDGES,
    same_layer_allowed: frozenset[tuple[str, str]] = SAME_LAYER_ALLOWED,
) -> tuple[list[str], list[str]]:
    """(problems, notes): problems fail the check; notes are allowlist entries that match no
    import any more (delete them)."""
    problems = layer_violations(edges, layers, same_layer_allowed)
    kept = [e for e in edges if (e.importer, e.imported) not in known_cycle_edges]
    for scc in cycles(kept, acyclic):
        members = set(scc)
        inner = [str(e) for e in kept if e.importer in members and e.imported in members]
        problems.append(
            f"import cycle in {acyclic}: {', '.join(scc)}\n      " + "\n      ".join(inner)
        )
    present = {(e.importer, e.imported) for e in edges}
    notes = [
        f"KNOWN_CYCLE_EDGES entry {a} -> {b} matches no import any more: delete it"
        for a, b in sorted(known_cycle_edges - present)
    ]
    return problems, notes


# The sans-I/O cores (DESIGN.md): no event loop, no sockets, no processes, no clock of their own
# (they take `now`). Run-time imports only: a TYPE_CHECKING import does nothing.
SANS_IO: tuple[str, ...] = ("sip", "sdp", "media")
IO_MODULES: frozenset[str] = frozenset(
    {"asyncio", "socket", "subprocess", "time", "threading", "selectors", "signal"}
)


def io_imports(src: Path, package: str = PACKAGE, sans_io: Sequence[str] = SANS_IO) -> list[str]:
    """One line per run-time import of an I/O or clock module (`IO_MODULES`) in a sans-I/O
    component."""
    problems = []
    for name, path in module_names(src, package).items():
        if component(name, package) not in sans_io:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for stmt, type_only in _walk(tree.body, False):
            if type_only:
                continue
            if isinstance(stmt, ast.Import):
                roots = [alias.name.split(".")[0] for alias in stmt.names]
            else:
                roots = [] if stmt.level else [(stmt.module or "").split(".")[0]]
            for root in roots:
                if root in IO_MODULES:
                    problems.append(
                        f"sans-I/O {name} imports {root} (line {stmt.lineno}): take `now` and "
                        "return bytes and events; the edges in net/ and calls/ do the I/O"
                    )
    return sorted(problems)


def describe_layers(layers: Sequence[Sequence[str]] = LAYERS) -> str:
    lines = ["Layers (a module may import its own component and lower layers; highest first):"]
    for i, layer in reversed(list(enumerate(layers))):
        names = ", ".join(c or f"{PACKAGE} (the package)" for c in layer)
        lines.append(f"  {i}  {names}")
    if SAME_LAYER_ALLOWED:
        allowed = ", ".join(f"{a} -> {b}" for a, b in sorted(SAME_LAYER_ALLOWED))
        lines.append(f"  allowed inside a layer: {allowed}")
    lines.append(f"No import cycle inside {PACKAGE}.{ACYCLIC} (TYPE_CHECKING imports count).")
    lines.append(f"No {', '.join(sorted(IO_MODULES))} in the sans-I/O {', '.join(SANS_IO)}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    src = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "src"
    edges = collect_imports(src)
    print(describe_layers())
    type_only = [e for e in edges if e.type_only]
    print(f"{len(edges)} imports between modules, {len(type_only)} of them TYPE_CHECKING only.")
    tolerated = [e for e in edges if (e.importer, e.imported) in KNOWN_CYCLE_EDGES]
    if tolerated:
        print(f"Tolerated (KNOWN_CYCLE_EDGES): {len(tolerated)}")
        for e in tolerated:
            print(f"  {e}")
    problems, notes = check(edges)
    problems += io_imports(src)
    for note in notes:
        print(f"note: {note}")
    if problems:
        print(f"\n{len(problems)} import problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("import graph OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
