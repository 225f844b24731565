"""The compiled engine: the pure KPI engine modules, compiled with Cython from their own source.

The per-event and per-window work of the KPI engine (sources, partials, merge, records, the
warning detector, staffing) is plain Python. Cython compiles those same ``.py`` files, unchanged,
into extension modules next to them; Python then imports the extension instead of the source.
Annotations are ignored (``annotation_typing=False``): the compiled module keeps Python's
semantics (no C ``double`` for a ``float`` annotation), it only skips the interpreter's dispatch.
C types come only where a module asks for them explicitly: ``cython.locals`` (a no-op in Python;
the Erlang loops of ``streams/staffing.py``, on arithmetic that is the same IEEE operations
either way), or an augmenting ``.pxd`` beside the source (``streams/sources.pxd`` and
``streams/partial.pxd``: stage 1's classes and the sketch become extension types, their
attributes struct fields and their per-event methods direct calls; the values stay Python
objects, containers declared ``dict``/``set``/``list`` must be exactly that). A ``.pxd`` is
part of what a build is checked against. Measured: about a quarter less CPU per event in process
(``docs/performance.md``). The batch reference (``streams/reference.py``) is never compiled: it
is the independent recomputation the engine is checked against.

``callpulse compile`` (``make compile``, run by ``make test`` and ``make demo``) builds the
modules whose source changed since the last build and records each source's hash. Importing a
compiled module whose source changed since fails loudly (a stale build would run old code);
``CALLPULSE_PURE_PYTHON=1`` imports the sources instead (the tests compare both).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: The engine modules compiled, and Kafka's partitioner (the worker hashes the key of every KPI
#: record it writes); everything they do is covered by the in-process tests.
MODULES = (
    "streams.windows",
    "streams.partitioning",
    "streams.partial",
    "streams.sources",
    "streams.engine",
    "streams.merge",
    "streams.kpis",
    "streams.forecast",
    "streams.staffing",
    "streams.early_warning.rolling",
    "streams.early_warning.seasonal",
    "streams.early_warning.rules",
    "streams.early_warning.tracker",
    "streams.early_warning.staffing_gap",
    "streams.early_warning.detector",
)

ROOT = Path(__file__).resolve().parent.parent  # the directory holding the ``streams`` package
MANIFEST = Path(__file__).resolve().parent / ".compiled.json"  # module -> hash of its source when built
PURE_ENV = "CALLPULSE_PURE_PYTHON"


def source_of(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def extension_of(module: str) -> Path | None:
    """The built extension module beside the source, if any."""
    src = source_of(module)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = src.with_name(src.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def declarations_of(module: str) -> Path:
    """The module's augmenting ``.pxd`` (C declarations Cython applies to the ``.py``), if any."""
    return source_of(module).with_suffix(".pxd")


def source_hash(module: str) -> str:
    """Hash of what the extension is built from: the source and its ``.pxd``, when it has one."""
    digest = hashlib.sha256(source_of(module).read_bytes())
    pxd = declarations_of(module)
    if pxd.exists():
        digest.update(pxd.read_bytes())
    return digest.hexdigest()


def read_manifest() -> dict[str, str]:
    try:
        return json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return {}


def pure_python() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the engine modules: the extension when it is built from the current source, the
    source when none is built or ``CALLPULSE_PURE_PYTHON`` is set; a stale extension is an error."""

    def __init__(self) -> None:
        self._manifest: dict[str, str] | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        src = source_of(fullname)
        ext = None if pure_python() else extension_of(fullname)
        if ext is None:
            return importlib.util.spec_from_file_location(fullname, src)
        if self._manifest is None:
            self._manifest = read_manifest()
        if self._manifest.get(fullname) != source_hash(fullname):
            raise ImportError(
                f"{ext.name} was compiled from an older {src.name}: run `callpulse compile` (make compile), "
                f"or delete {ext} to run the source, or set {PURE_ENV}=1"
            )
        return importlib.util.spec_from_file_location(fullname, ext)


def install_finder() -> None:
    """Put the finder before Python's own (which would take any extension, stale or not)."""
    if not any(isinstance(f, CompiledFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, CompiledFinder())


def engine_mode() -> str:
    """What the engine runs as, for the worker's start-up log line."""
    loaded = [m for m in MODULES if m in sys.modules]
    compiled = [m for m in loaded if not (getattr(sys.modules[m], "__file__", "") or "").endswith(".py")]
    if not compiled:
        return "pure Python"
    return f"compiled ({len(compiled)} of {len(loaded)} loaded engine modules)"


def build(force: bool = False) -> list[str]:
    """Compile the modules whose source changed since their last build (all with ``force``);
    returns the modules built. Needs Cython and a C compiler; fails loudly without them."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    manifest = read_manifest()
    hashes = {m: source_hash(m) for m in MODULES}
    todo = [m for m in MODULES if force or extension_of(m) is None or manifest.get(m) != hashes[m]]
    if not todo:
        return []
    # -w: the C compiler's warnings are about Cython's generated code, not ours
    extensions = [Extension(m, [str(source_of(m).relative_to(ROOT))], extra_compile_args=["-w"]) for m in todo]
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        modules = cythonize(
            extensions,
            compiler_directives={"language_level": 3, "annotation_typing": False},
            nthreads=os.cpu_count() or 1,
            quiet=True,
            force=True,
        )
        dist = Distribution({"name": "callpulse-engine", "ext_modules": modules})
        cmd = build_ext(dist)
        cmd.inplace = True
        cmd.parallel = os.cpu_count() or 1
        for m in todo:  # a new file, not the old one overwritten: running workers have it mapped
            if (old := extension_of(m)) is not None:
                old.unlink()
        with tempfile.TemporaryDirectory(prefix="callpulse-compile-") as tmp:
            cmd.build_temp = cmd.build_lib = tmp  # nothing left beside the sources but the modules
            cmd.ensure_finalized()
            cmd.run()
    finally:
        os.chdir(cwd)
    for m in todo:
        source_of(m).with_suffix(".c").unlink(missing_ok=True)  # generated C, not kept
    manifest.update({m: hashes[m] for m in todo})
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return todo


def clean() -> list[Path]:
    """Remove the built extensions and the manifest (the sources run again)."""
    removed = [ext for m in MODULES if (ext := extension_of(m)) is not None]
    for path in removed:
        path.unlink()
    MANIFEST.unlink(missing_ok=True)
    return removed
