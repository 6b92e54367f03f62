"""Static API conformance: our TensorRT and cuda-python calls against NVIDIA's real bindings (issue 23).

The source files that touch ``tensorrt`` or cuda-python are read with ``ast`` and a small forward type
inference: ``trt`` is the tensorrt module (``import tensorrt as trt``, ``import_tensorrt()``, a
parameter named ``trt``), ``rt``/``drv`` the cuda-python runtime/driver modules; ``trt.Builder(...)``
is a Builder, and a method's result has the type its pybind signature (``__doc__``) returns, so
``builder.create_network(flags)`` is an INetworkDefinition and ``network.get_layer(i)`` an ILayer.
A few parameters are typed by name (PARAM_TYPES). Against one version's surface (tests/real_bindings.py
``surface``) it checks:

* every ``trt.X`` / ``rt.X`` exists, every enum member exists, every attribute and method used on a typed
  object exists on its class (a property assigned to must be settable);
* every call of a known function or method fits one of its pybind overloads (argument count, keyword
  names, literal kinds against plain int/str/float parameters);
* every method of our subclasses of a TensorRT interface (``ILogger``, ``IOutputAllocator``,
  ``IProgressMonitor``, ...) is one the bindings call (a method of the base class, or a name in
  ``tensorrt.so``, which holds the trampolines' names), or one our own code calls (a helper);
* names read through ``getattr(obj, variable)`` on an enum come from ``dynamic`` (compat.py's plans for
  that version), and functions in ``unreachable`` (never run on that version, by compat.py) are skipped.

Accesses guarded by ``hasattr``/3-argument ``getattr``/``try ... except (AttributeError|Exception)`` may
be missing; they are reported separately (``Report.guarded_missing``) so a test can require that each
exists in at least one version (a misspelling under a guard exists in none).
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]

# Files read, besides any other file under the repository that imports tensorrt or cuda-python.
FILES = ("runtime/tensorrt/*.py", "runtime/doctor.py", "scripts/device_check.py", "benchmarks/*.py", "bench/*.py")
_MENTIONS = re.compile(r"import tensorrt|tensorrt as trt|cuda\.bindings|cudart|import_tensorrt|import_cuda_runtime")
# Parameters whose name says which TensorRT object they hold (only where the file uses tensorrt).
PARAM_TYPES = {"builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig",
               "cuda_engine": "ICudaEngine", "exec_context": "IExecutionContext",
               "runtime": "Runtime", "parser": "OnnxParser"}
# Project functions that return a binding module.
MODULE_FACTORIES = {"import_tensorrt": "trt", "import_cuda_runtime": "rt"}
# Functions whose pybind signature does not name the class they return (10.16+ annotate
# get_plugin_registry as 'detail::accessor<...>').
RETURNS = {"get_plugin_registry": "IPluginRegistry"}
PLAIN = {"int": int, "typing.SupportsInt": int, "float": float, "typing.SupportsFloat": float, "str": str,
         "bool": bool}


def source_files(root: Path = ROOT) -> list[Path]:
    out: dict[Path, None] = {}
    for pat in FILES:
        for p in sorted(root.glob(pat)):
            out[p] = None
    skip = {"tests", "build", "dist", "node_modules"}
    tops = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and d.name not in skip]
    for p in [q for d in tops for q in sorted(d.rglob("*.py"))] + sorted(root.glob("*.py")):
        if "site-packages" in p.parts:
            continue
        try:
            if _MENTIONS.search(p.read_text(encoding="utf-8", errors="replace")):
                out[p] = None
        except OSError:
            continue
    return list(out)


# -- the surface of one binding module ---------------------------------------------------------------

def _last(dotted: str) -> str:
    return dotted.strip().split(".")[-1].strip()


def _split_params(s: str) -> list[str]:
    out, depth, cur, quote = [], 0, "", None
    for ch in s:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


@dataclass
class Param:
    name: str
    annotation: str = ""
    has_default: bool = False
    star: str = ""  # "*" (varargs or the keyword-only marker), "**"


@dataclass
class Signature:
    text: str
    params: list[Param]
    returns: str


def parse_signatures(name: str, doc: str) -> list[Signature]:
    """pybind11 ('name(self: T, x: int = 0) -> R', overloads numbered) or Cython ('name(size_t size)')."""
    sigs = []
    for m in re.finditer(rf"^(?:\d+\.\s*)?{re.escape(name)}\((.*)\)(?:\s*->\s*(.+))?$", doc or "", re.M):
        params = []
        for raw in _split_params(m.group(1)):
            star = "**" if raw.startswith("**") else "*" if raw.startswith("*") else ""
            body = raw.lstrip("*")
            head, eq, _default = body.partition("=")
            if ":" in head:
                pname, _, ann = head.partition(":")
            else:  # Cython: 'size_t size', 'stream=None'
                bits = head.split()
                pname, ann = (bits[-1] if bits else ""), " ".join(bits[:-1])
            params.append(Param(pname.strip(), ann.strip(), bool(eq), star))
        sigs.append(Signature(m.group(0), params, (m.group(2) or "").strip()))
    if len(sigs) > 1:  # pybind's 'name(*args, **kwargs)' header line above numbered overloads
        sigs = [s for s in sigs if [p.star for p in s.params] != ["*", "**"]] or sigs
    return sigs


class Surface:
    """One module's dump (real_bindings.surface), e.g. tensorrt 10.3.0."""

    def __init__(self, data: dict[str, Any], key: str, label: str):
        self.key, self.label = key, label
        self.names: dict[str, Any] = data["names"]
        self.so_strings = set(data.get("so_strings", ()))
        self.version = data.get("version", "")

    def entry(self, name: str) -> dict[str, Any] | None:
        return self.names.get(name)

    def member(self, cls: str, attr: str) -> dict[str, Any] | None:
        node = self._class(cls)
        return (node or {}).get("members", {}).get(attr)

    def _class(self, cls: str) -> dict[str, Any] | None:
        node: dict[str, Any] | None = None
        for i, part in enumerate(cls.split(".")):
            node = self.names.get(part) if i == 0 else (node or {}).get("members", {}).get(part)
        return node

    def type_named(self, dotted: str) -> tuple | None:
        """A pybind annotation ('tensorrt_bindings.tensorrt.ILayer', 'Optional[...]') -> ('obj', cls)."""
        m = re.search(r"([A-Za-z_][\w.]*)\s*(?:\]|\|\s*None|$)", dotted.replace("typing.Optional[", ""))
        name = _last(m.group(1)) if m else ""
        e = self.names.get(name)
        if e and e["kind"] in ("class", "enum"):
            return ("obj", self.key, name)
        return None


# -- findings --------------------------------------------------------------------------------------

@dataclass
class Finding:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class Report:
    label: str
    problems: list[Finding] = field(default_factory=list)
    guarded_missing: dict[str, Finding] = field(default_factory=dict)  # "Cls.attr" -> where
    checked_calls: int = 0
    checked_names: int = 0
    subclasses: dict[str, str] = field(default_factory=dict)  # our class -> TensorRT base
    seen: set[str] = field(default_factory=set)  # every 'Class.attr' / 'module.attr' looked up

    def lines(self) -> list[str]:
        return [f"{self.label}: {p}" for p in self.problems]


# -- the checker -------------------------------------------------------------------------------------

_GUARD_EXC = {"AttributeError", "Exception", "BaseException", "TypeError"}


class _Base:
    """State and reporting shared by the parts of the checker."""

    s: dict[str, Surface]
    report: Report
    dynamic: dict[str, list[str]]
    unreachable: set[str]
    called_names: set[str]
    file: str
    offset: int
    file_uses_trt: bool
    _pending_subclasses: list[tuple[str, ast.ClassDef, tuple]]

    def _expr(self, e: ast.expr | None, env: dict[str, tuple], guards: frozenset) -> tuple | None:
        raise NotImplementedError  # _Expressions

    def _attr(self, recv: tuple, attr: str, node: ast.AST, guards: frozenset) -> dict[str, Any] | None:
        raise NotImplementedError  # _Expressions

    def _line(self, node: ast.AST) -> int:
        return getattr(node, "lineno", 0) + self.offset

    def _problem(self, node: ast.AST, msg: str) -> None:
        self.report.problems.append(Finding(self.file, self._line(node), msg))

    def _label(self, t: tuple) -> str:
        return self.s[t[1]].label


class _Statements(_Base):
    """Walks statements in order, keeping each scope's variable types (``env``) and guards."""

    def _block(self, body: list[ast.stmt], env: dict[str, tuple], guards: frozenset) -> None:
        for st in body:
            self._stmt(st, env, guards)

    def _stmt(self, st: ast.stmt, env: dict[str, tuple], guards: frozenset) -> None:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._function(st, env, guards)
        elif isinstance(st, ast.ClassDef):
            self._class(st, env, guards)
        elif isinstance(st, (ast.Import, ast.ImportFrom)):
            self._import(st, env)
        elif isinstance(st, ast.Assign):
            t = self._expr(st.value, env, guards)
            for tgt in st.targets:
                self._assign(tgt, t, env, guards)
        elif isinstance(st, ast.AnnAssign) and st.value is not None:
            self._assign(st.target, self._expr(st.value, env, guards), env, guards)
        elif isinstance(st, ast.Try):
            caught = {n for h in st.handlers for n in _exc_names(h.type)}
            inner = guards | {"*"} if caught & _GUARD_EXC else guards
            if caught & {"ImportError", "ModuleNotFoundError"}:
                inner = inner | {"import"}
            self._block(st.body, env, inner)
            for h in st.handlers:
                self._block(h.body, env, guards)
            self._block(st.orelse, env, guards)
            self._block(st.finalbody, env, guards)
        elif isinstance(st, (ast.If, ast.While)):
            self._expr(st.test, env, guards)
            g = guards | _hasattr_names(st.test)
            self._block(st.body, env, g)
            self._block(st.orelse, env, g)
        elif isinstance(st, (ast.For, ast.AsyncFor)):
            self._expr(st.iter, env, guards)
            names = _constant_strings(st.iter)
            if names and isinstance(st.target, ast.Name):  # for attr in ("a", "b"): getattr(obj, attr, None)
                env[st.target.id] = ("names", names)
            self._block(st.body, env, guards)
            self._block(st.orelse, env, guards)
        elif isinstance(st, (ast.With, ast.AsyncWith)):
            for it in st.items:
                self._expr(it.context_expr, env, guards)
            self._block(st.body, env, guards)
        else:
            for child in ast.iter_child_nodes(st):
                if isinstance(child, ast.expr):
                    self._expr(child, env, guards)
                elif isinstance(child, ast.stmt):
                    self._stmt(child, env, guards)

    def _import(self, st: ast.stmt, env: dict[str, tuple]) -> None:
        if isinstance(st, ast.Import):
            for a in st.names:
                if a.name == "tensorrt":
                    env[a.asname or "tensorrt"] = ("mod", "trt")
        elif isinstance(st, ast.ImportFrom):
            for a in st.names:
                full = f"{st.module}.{a.name}"
                key = {"cuda.bindings.runtime": "rt", "cuda.cudart": "rt", "cuda.bindings.driver": "drv",
                       "cuda.cuda": "drv"}.get(full)
                if key:
                    env[a.asname or a.name] = ("mod", key)

    def _assign(self, tgt: ast.expr, t: tuple | None, env: dict[str, tuple], guards: frozenset) -> None:
        if isinstance(tgt, ast.Name):
            if t is not None:
                env[tgt.id] = t
            else:
                env.pop(tgt.id, None)
        elif isinstance(tgt, ast.Attribute):
            if isinstance(tgt.value, ast.Name) and tgt.value.id == "self" and "__self__" in env:
                attrs = env["__self__"][1]
                if t is not None:
                    attrs[tgt.attr] = t
                return
            recv = self._expr(tgt.value, env, guards)
            if recv and recv[0] == "obj":
                m = self._attr(recv, tgt.attr, tgt, guards)
                if m is not None and m.get("kind") == "property" and not m.get("settable"):
                    self._problem(tgt, f"{recv[2]}.{tgt.attr} is read-only in {self._label(recv)}")
        elif isinstance(tgt, (ast.Tuple, ast.List)):
            for e in tgt.elts:
                self._assign(e, None, env, guards)

    def _function(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, env: dict[str, tuple], guards: frozenset) -> None:
        if fn.name in self.unreachable:
            return
        local = dict(env)
        uses_trt = any(v == ("mod", "trt") for v in env.values() if isinstance(v, tuple))
        args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
        for a in args:
            annotated = a.annotation is not None and not (isinstance(a.annotation, ast.Name) and a.annotation.id == "Any")
            if a.arg == "trt" and annotated:
                local.pop("trt", None)  # e.g. doctor's ModuleProbe named trt
            elif a.arg == "trt":
                local["trt"] = ("mod", "trt")
                uses_trt = True
            elif a.arg in ("rt",):
                local["rt"] = ("mod", "rt")
            elif a.arg in local and a.arg not in ("self",):
                local.pop(a.arg)
        if uses_trt or self.file_uses_trt:
            for a in args:
                if a.arg in PARAM_TYPES and "trt" in self.s:
                    local[a.arg] = ("obj", "trt", PARAM_TYPES[a.arg])
        g = guards | {n for n in _hasattr_names_in(fn)}
        self._block(fn.body, local, g)

    def _class(self, cls: ast.ClassDef, env: dict[str, tuple], guards: frozenset) -> None:
        for b in cls.bases:
            bt = self._expr(b, env, guards)
            if bt and bt[0] == "cls":
                self._pending_subclasses.append((self.file, cls, bt))
                self.report.subclasses[cls.name] = bt[2]
        attrs: dict[str, tuple] = {}
        cenv = dict(env)
        cenv["__self__"] = ("self", attrs)
        methods = [s for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        methods.sort(key=lambda f: f.name != "__init__")  # __init__ first: it types self's attributes
        for st in cls.body:
            if not isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._stmt(st, cenv, guards)
        for fn in methods:
            self._function(fn, cenv, guards)


class _Expressions(_Base):
    """Types expressions and checks each attribute, enum member and call against the surface."""

    def _expr(self, e: ast.expr | None, env: dict[str, tuple], guards: frozenset) -> tuple | None:
        if e is None:
            return None
        if isinstance(e, ast.Name):
            return env.get(e.id) if e.id != "__self__" else None
        if isinstance(e, ast.Attribute):
            if isinstance(e.value, ast.Name) and e.value.id == "self" and "__self__" in env:
                return env["__self__"][1].get(e.attr)
            recv = self._expr(e.value, env, guards)
            if recv is None:
                return None
            m = self._attr(recv, e.attr, e, guards)
            return self._member_type(recv, e.attr, m)
        if isinstance(e, ast.Call):
            return self._call(e, env, guards)
        if isinstance(e, ast.IfExp):
            self._expr(e.test, env, guards)
            a, b = self._expr(e.body, env, guards), self._expr(e.orelse, env, guards)
            return a or b
        if isinstance(e, (ast.Lambda,)):
            return None
        for child in ast.iter_child_nodes(e):
            if isinstance(child, ast.expr):
                self._expr(child, env, guards)
            elif isinstance(child, ast.comprehension):
                self._expr(child.iter, env, guards)
                for cond in child.ifs:
                    self._expr(cond, env, guards)
        return None

    def _attr(self, recv: tuple, attr: str, node: ast.AST, guards: frozenset) -> dict[str, Any] | None:
        """Check that ``attr`` exists on ``recv``; return its surface entry (None: unknown/missing)."""
        kind, key = recv[0], recv[1]
        surf = self.s.get(key)
        if surf is None or kind not in ("mod", "cls", "obj", "enum"):
            return None
        self.report.checked_names += 1
        if kind == "mod":
            m = surf.entry(attr)
            where = f"{surf.label} has no {key}.{attr}"
            qual = f"{key}.{attr}"
        else:
            cls = recv[2]
            m = surf.member(cls, attr)
            if m is None and kind == "enum" and attr in ("name", "value"):
                return {"kind": "value"}
            where = f"{surf.label}: {cls} has no {'member' if kind == 'enum' else 'attribute'} {attr!r}"
            qual = f"{cls}.{attr}"
        self.report.seen.add(qual)
        if m is None and attr.startswith("__"):
            return None
        if m is None:
            if "*" in guards or attr in guards or ("import" in guards and kind == "mod"):
                self.report.guarded_missing.setdefault(qual, Finding(self.file, self._line(node), where))
            else:
                self._problem(node, where)
        return m

    def _member_type(self, recv: tuple, attr: str, m: dict[str, Any] | None) -> tuple | None:
        if m is None:
            return None
        key = recv[1]
        k = m["kind"]
        owner = recv[2] if recv[0] != "mod" else None
        qual = f"{owner}.{attr}" if owner else attr
        if k == "class":
            return ("cls", key, qual)
        if k == "enum":
            return ("enum", key, qual)
        if k == "function":
            return ("func", key, qual, m.get("doc", ""), False)
        if k == "method":
            return ("func", key, qual, m.get("doc", ""), recv[0] == "cls")
        if k == "property":
            sig = re.search(r"->\s*(.+)$", (m.get("doc") or "").splitlines()[0] if m.get("doc") else "")
            return self.s[key].type_named(sig.group(1)) if sig else None
        return None

    def _call(self, e: ast.Call, env: dict[str, tuple], guards: frozenset) -> tuple | None:
        for a in e.args:
            self._expr(a.value if isinstance(a, ast.Starred) else a, env, guards)
        for kw in e.keywords:
            self._expr(kw.value, env, guards)
        f = e.func
        if isinstance(f, ast.Name):
            if f.id in MODULE_FACTORIES:
                return ("mod", MODULE_FACTORIES[f.id])
            if f.id == "getattr" and len(e.args) >= 2:
                return self._getattr(e, env, guards)
            if f.id == "hasattr":
                return None
        ft = self._expr(f, env, guards)
        if ft is None:
            return None
        if ft[0] == "cls":
            init = self.s[ft[1]].member(ft[2], "__init__")
            if init is not None:
                self._check_call(e, "__init__", init.get("doc", ""), ft, bound=True)
            return ("obj", ft[1], ft[2])
        if ft[0] == "func":
            _, key, qual, doc, unbound = ft
            name = qual.split(".")[-1]
            sigs = self._check_call(e, name, doc, ft, bound=not unbound and "." in qual)
            for s in sigs:
                t = self.s[key].type_named(s.returns) if s.returns else None
                if t is not None:
                    return t
            if name in RETURNS and self.s[key].entry(RETURNS[name]):
                return ("obj", key, RETURNS[name])
        return None

    def _getattr(self, e: ast.Call, env: dict[str, tuple], guards: frozenset) -> tuple | None:
        recv = self._expr(e.args[0], env, guards)
        name = e.args[1]
        guarded = guards | ({"*"} if len(e.args) >= 3 else frozenset())
        if recv is None:
            return None
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            m = self._attr(recv, name.value, e, guarded)
            return self._member_type(recv, name.value, m)
        alternatives = env.get(name.id) if isinstance(name, ast.Name) else None
        if alternatives and alternatives[0] == "names":
            for n in alternatives[1]:
                self._attr(recv, n, e, guarded | {"*"})  # alternatives: each may be missing, not all
            return None
        if recv[0] == "enum" and recv[2] in self.dynamic:
            for n in self.dynamic[recv[2]]:
                if self.s[recv[1]].member(recv[2], n) is None:
                    self._problem(e, f"{self.s[recv[1]].label}: {recv[2]} has no member {n!r} (a name compat.py's "
                                     f"plans use on this version, read here with getattr)")
                self.report.checked_names += 1
            return ("obj", recv[1], recv[2])
        return None

    def _check_call(self, e: ast.Call, name: str, doc: str, ft: tuple, bound: bool) -> list[Signature]:
        sigs = parse_signatures(name, doc)
        if not sigs:
            return []
        self.report.checked_calls += 1
        starred = any(isinstance(a, ast.Starred) for a in e.args) or any(k.arg is None for k in e.keywords)
        npos = len(e.args)
        kws = [k.arg for k in e.keywords if k.arg]
        errors = []
        for s in sigs:
            params = list(s.params)
            if bound and params and params[0].name in ("self", "arg0") and ft[1] == "trt":
                params = params[1:]
            why = _fits(params, npos, kws, e, starred)
            if why is None:
                return [s] + [x for x in sigs if x is not s]
            errors.append(why)
        label = self.s[ft[1]].label
        self._problem(e, f"{label}: call does not fit {name}: {errors[0]}; signature(s): "
                         + " | ".join(re.sub(r"\s+", " ", s.text)[:200] for s in sigs))
        return sigs


class Checker(_Statements, _Expressions):
    """The conformance check of a set of source files against one version's surfaces."""

    def __init__(self, surfaces: dict[str, Surface], label: str, dynamic: dict[str, Iterable[str]] | None = None,
                 unreachable: Iterable[str] = (), root: Path = ROOT):
        self.s = surfaces
        self.report = Report(label)
        self.dynamic = {k: sorted(set(v)) for k, v in (dynamic or {}).items()}
        self.unreachable = set(unreachable)
        self.root = root
        self.called_names: set[str] = set()
        self.file = ""
        self.offset = 0
        self.file_uses_trt = False
        self._pending_subclasses: list[tuple[str, ast.ClassDef, tuple]] = []

    # entry points ----------------------------------------------------------------------------------
    def check_files(self, files: Iterable[Path], sources: dict[Path, str] | None = None) -> Report:
        trees = []
        for f in files:
            text = (sources or {}).get(f) or f.read_text(encoding="utf-8")
            rel = str(f.relative_to(self.root)) if f.is_absolute() and self.root in f.parents else str(f)
            parsed, called = _parse(text)
            trees += [(rel, tree, off) for tree, off in parsed]
            self.called_names |= called
        for rel, tree, off in trees:
            self.file, self.offset = rel, off
            self.file_uses_trt = _mentions_trt(tree)
            self._block(tree.body, {}, frozenset())
        for rel, cls, base in self._pending_subclasses:
            self.file = rel
            self._check_subclass(cls, base)
        return self.report

    # subclasses of TensorRT interfaces ---------------------------------------------------------------
    def _check_subclass(self, cls: ast.ClassDef, base: tuple) -> None:
        surf = self.s[base[1]]
        base_name = base[2]
        for fn in cls.body:
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name.startswith("__"):
                continue
            m = surf.member(base_name, fn.name)
            if m is not None and m.get("kind") == "method":
                sigs = parse_signatures(fn.name, m.get("doc", ""))
                ours = len(fn.args.posonlyargs + fn.args.args)
                ndef = len(fn.args.defaults)
                if sigs and not any(ours - ndef <= len(s.params) <= ours for s in sigs):
                    self._problem(fn, f"{surf.label}: {cls.name}.{fn.name} takes {ours} argument(s) "
                                      f"(self included); the bindings call {re.sub(chr(10), ' ', sigs[0].text)[:160]}")
                continue
            if fn.name in surf.so_strings:
                continue  # a trampoline name the bindings call (e.g. IOutputAllocator.notify_shape)
            if fn.name in self.called_names:
                continue  # a helper our own code calls
            self._problem(fn, f"{surf.label}: {cls.name}.{fn.name} overrides nothing in trt.{base_name}: it is "
                              "not a method of the base class, not a name in tensorrt.so (the names its "
                              "trampolines call), and our code never calls it")


def _fits(params: list[Param], npos: int, kws: list[str], e: ast.Call, starred: bool) -> str | None:
    varargs = any(p.star == "*" and p.name for p in params)
    varkw = any(p.star == "**" for p in params)
    positional = []
    for p in params:
        if p.star:
            break
        positional.append(p)
    names = {p.name for p in params if not p.star}
    if not starred and not varargs and npos > len(positional):
        return f"{npos} positional argument(s), at most {len(positional)}"
    for k in kws:
        if k not in names and not varkw:
            return f"no parameter named {k!r}"
    if not starred:
        given = {p.name for p in positional[:npos]} | set(kws)
        missing = [p.name for p in params if not p.star and not p.has_default and p.name not in given]
        if missing:
            return f"missing argument(s) {missing}"
        for i, a in enumerate(e.args):
            if i < len(positional) and isinstance(a, ast.Constant):
                bad = _kind_mismatch(a.value, positional[i].annotation)
                if bad:
                    return f"argument {i + 1} ({a.value!r}) {bad}"
        by = {p.name: p for p in params}
        for k in e.keywords:
            if k.arg in by and isinstance(k.value, ast.Constant):
                bad = _kind_mismatch(k.value.value, by[k.arg].annotation)
                if bad:
                    return f"{k.arg}={k.value.value!r} {bad}"
    return None


def _kind_mismatch(value: Any, annotation: str) -> str | None:
    want = PLAIN.get(annotation.strip())
    if want is None or value is None:
        return None
    ok = isinstance(value, want) or (want is float and isinstance(value, int) and not isinstance(value, bool))
    if want is int and isinstance(value, bool):
        ok = True
    return None if ok else f"is a {type(value).__name__}, the parameter is {annotation}"


def _constant_strings(e: ast.expr) -> tuple[str, ...]:
    if isinstance(e, (ast.Tuple, ast.List)) and e.elts and all(
            isinstance(x, ast.Constant) and isinstance(x.value, str) for x in e.elts):
        return tuple(x.value for x in e.elts)
    return ()


def _exc_names(t: ast.expr | None) -> set[str]:
    if t is None:
        return {"BaseException"}
    if isinstance(t, ast.Tuple):
        return {n for x in t.elts for n in _exc_names(x)}
    if isinstance(t, ast.Name):
        return {t.id}
    if isinstance(t, ast.Attribute):
        return {t.attr}
    return set()


def _hasattr_names(test: ast.expr) -> frozenset:
    return frozenset(n.args[1].value for n in ast.walk(test)
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr"
                     and len(n.args) == 2 and isinstance(n.args[1], ast.Constant))


def _hasattr_names_in(fn: ast.AST) -> set[str]:
    """hasattr(x, 'name') anywhere in the function guards 'name' in all of it (early returns, if/else)."""
    out: set[str] = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr" and len(n.args) == 2 \
                and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str):
            out.add(n.args[1].value)
    return out


def _mentions_trt(fn: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "trt" for n in ast.walk(fn))


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> tuple[list[tuple[ast.Module, int]], frozenset[str]]:
    """A file's tree and its embedded scripts (with their line offsets), and every method name it calls.
    Cached: the checker runs over the same sources once per version and never changes a tree."""
    tree = ast.parse(text)
    parsed = [(tree, 0)] + _embedded_scripts(tree)
    called = frozenset(n.func.attr for t, _ in parsed for n in ast.walk(t)
                       if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute))
    return parsed, called


def _embedded_scripts(tree: ast.Module) -> list[tuple[ast.Module, int]]:
    """Python scripts held in string constants (doctor's subprocess probes) that import the bindings."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value \
                and _MENTIONS.search(node.value) and "\n" in node.value:
            try:
                sub = ast.parse(node.value)
            except SyntaxError:
                continue
            out.append((sub, node.lineno - 1))
    return out
