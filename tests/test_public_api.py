"""The product stands on its dependencies' public APIs and leaves process-global state alone.

Walks the AST of ``pipeline/``, ``flows/`` and ``audioprep/``:

- no import of an underscore name (or module) from the guarded packages;
- no attribute access of an underscore name on anything imported from them;
- no access of an underscore attribute that the project itself never defines (a private
  member of a dependency's object, such as ``fs._cat_file`` or ``runner._client``);
- no call that changes process-global state: CPU affinity, malloc settings, codec thread
  pools, global Dask config outside a ``with`` block, multiprocessing start methods and
  fork-server preloads.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CODE_DIRS = ("pipeline", "flows", "audioprep")
GUARDED = {"prefect", "prefect_dask", "distributed", "dask", "zarr", "numcodecs", "fsspec", "s3fs"}
PUBLIC_DUNDERS = {
    "__name__", "__version__", "__file__", "__doc__", "__class__", "__dict__", "__module__", "__qualname__",
    "__wrapped__", "__init__", "__enter__", "__exit__", "__call__", "__all__", "__path__", "__spec__",
}
GLOBAL_STATE_CALLS = {
    "sched_setaffinity", "mallopt", "set_forkserver_preload", "set_start_method", "set_nthreads", "setpriority", "nice",
}


def _files() -> list[pathlib.Path]:
    return sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and name not in PUBLIC_DUNDERS


def _project_private_names(trees: dict[pathlib.Path, ast.AST]) -> set[str]:
    """Underscore names the project defines: functions, classes, attributes, slots."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
                names.add(node.value)  # __slots__ entries, getattr names
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {n for n in names if n.startswith("_")}


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _with_items(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            ids.update(id(item.context_expr) for item in node.items)
    return ids


def find_violations(trees: dict[pathlib.Path, ast.AST]) -> list[str]:
    own = _project_private_names(trees)
    out: list[str] = []
    for path, tree in trees.items():
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        guarded_names: set[str] = set()  # local names bound to guarded modules or their objects
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    if top in GUARDED:
                        guarded_names.add(a.asname or top)
                        if any(_private(part) for part in a.name.split(".")):
                            out.append(f"{rel}:{node.lineno}: import {a.name}")
            elif isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] in GUARDED:
                    if any(_private(p) for p in parts):
                        out.append(f"{rel}:{node.lineno}: from {node.module} import ...")
                    for a in node.names:
                        guarded_names.add(a.asname or a.name)
                        if _private(a.name):
                            out.append(f"{rel}:{node.lineno}: from {node.module} import {a.name}")
        in_with = _with_items(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and not node.attr.startswith("__"):
                if _root(node) in guarded_names:
                    out.append(f"{rel}:{node.lineno}: {_root(node)}...{node.attr}")
                elif node.attr not in own and _root(node) not in sys.stdlib_module_names:  # os._exit is documented
                    out.append(f"{rel}:{node.lineno}: .{node.attr} (a dependency's private member)")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr not in PUBLIC_DUNDERS and _root(node) in guarded_names:
                out.append(f"{rel}:{node.lineno}: {_root(node)}...{node.attr}")
            elif isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
                if name in GLOBAL_STATE_CALLS:
                    out.append(f"{rel}:{node.lineno}: {name}(...) changes process-global state")
                dotted = ast.unparse(fn)
                if dotted.endswith("config.set") and _root(fn) in guarded_names | {"dask"} and id(node) not in in_with:
                    out.append(f"{rel}:{node.lineno}: {dotted}(...) outside a with block changes global Dask config")
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and _root(t) in guarded_names:
                        out.append(f"{rel}:{node.lineno}: assigns {ast.unparse(t)} (a dependency's global)")
    return out


def _parse(paths) -> dict[pathlib.Path, ast.AST]:
    return {p: ast.parse(p.read_text(), filename=str(p)) for p in paths}


def test_no_private_api_and_no_global_state():
    violations = find_violations(_parse(_files()))
    assert not violations, "private API or process-global state:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    "source",
    [
        "from distributed.utils import _forkserver_preload_set",
        "import distributed.utils\ndistributed.utils._forkserver_preload_set = True",
        "import numcodecs.blosc\nnumcodecs.blosc.use_threads = False",
        "def f(fs):\n    return fs._cat_file('x')",
        "def f(runner):\n    return runner._client",
        "from prefect.context import SyncClientContext\nSyncClientContext.__var__.set(1)",
        "import os\nos.sched_setaffinity(0, {0})",
        "import ctypes\nctypes.CDLL('libc.so.6').mallopt(-1, 1)",
        "import dask\ndask.config.set({'a': 1})",
        "import prefect.server._internal",
        "import fsspec\nfs = fsspec.filesystem('file')\nfs._strip_protocol('x')",
    ],
)
def test_the_checker_catches(tmp_path, source):
    p = tmp_path / "mod.py"
    p.write_text(source)
    assert find_violations(_parse([p]))


@pytest.mark.parametrize(
    "source",
    [
        "import dask\nwith dask.config.set({'a': 1}):\n    pass",
        "class A:\n    def __init__(self):\n        self._x = 1\n    def f(self):\n        return self._x",
        "from prefect import flow, task\nimport zarr\nzarr.open_group('x')",
        "import os\nos._exit(130)",
    ],
)
def test_the_checker_allows(tmp_path, source):
    p = tmp_path / "mod.py"
    p.write_text(source)
    assert not find_violations(_parse([p]))
