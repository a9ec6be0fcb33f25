"""The executable ledger: every vLLM internal that the plugin and the server rely on has
an entry in docs/patches.md, and each entry can be checked against another vLLM.

    python scripts/check_vllm_internals.py                     # fails on an unlisted internal
    python scripts/check_vllm_internals.py --vllm-src DIR ...  # each entry against other trees
        [--report docs/vllm-upgrade.md]

What it finds, by reading the code (ast), in sharp_plugin/ and server/:
- every vLLM name imported (`from vllm.x import Y` is `vllm.x.Y`);
- every private vLLM method overridden: a method named `_x` in our classes that a vLLM
  class we import (or one of its ancestors) defines, as `vllm.module.Class._x`;
- every vLLM method or attribute patched: an assignment to an attribute of an imported
  vLLM class (`vllm.module.Class.name`) or to an attribute vLLM's classes define
  (`.name`);
- every vLLM attribute read, as `.name`: on `self` in our classes, an attribute our code
  never defines but vLLM's classes do (what a family inherits: `self.visual`); on any
  other object, an attribute vLLM's classes define that is not also one of torch's,
  numpy's, pydantic's, Hugging Face's configs' or the builtins' (those are not vLLM's to
  change), nor our own.
The attribute rules are heuristics: they see names, not types. What they cannot see (an
attribute that vLLM shares with torch, say `data`) is listed in its entry by hand.

The ledger: each entry of docs/patches.md is a `## N. title` section with a line
`- **Internals:**` followed by backticked items, `vllm.dotted.Name` or `.attr`. Entries
are numbered in order; a `- **Also relied on:**` line lists what the check cannot find
in the code (public methods we override, `env:NAME` variables vLLM reads), which the
comparison with other trees still looks up. The check fails on a found internal that no
entry lists, on a
listed item the code no longer uses, and on entries out of order.

With --vllm-src: each dotted item is looked up in the installed vLLM (the pinned minor)
and in each given source tree (the `vllm/` package directory's parent, e.g. an unzipped
wheel): gone, signature changed, source changed (the diff is shown), or unchanged; each
`.attr` item: still defined by some class, or gone.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import hashlib
import pickle
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("sharp_plugin", "server")
# Where attributes and patches are looked for: the plugin, and the one server module that
# talks to vLLM (the rest of server/ knows HTTP, and imports from vLLM are checked there).
ATTRIBUTES_IN = ("sharp_plugin", "server/engine.py", "server/chat/run.py")
LEDGER = REPO / "docs" / "patches.md"
DESIGN = REPO / "docs" / "model-runner-v2.md"
CACHE = REPO / "runs" / "cache"


# ---- vLLM's source, indexed -----------------------------------------------------------------
@dataclass
class Definition:
    """Where a name is bound. `node` is the statement that binds it (None for a module, an
    import or an attribute set on `self`); only what the checks need of it is kept, so
    that the index pickles small."""

    qualname: str
    path: Path
    node: ast.AST | None = None
    signature: str | None = None  # a function's parameters, as written
    lines: tuple[int, int] | None = None  # the statement's first and last line

    def __post_init__(self) -> None:
        node = self.node
        if node is not None:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.signature = ast.unparse(node.args)
            self.lines = (node.lineno, node.end_lineno)
            self.node = None

    @property
    def bound_here(self) -> bool:
        """Defined by a statement of its own (not an import or a `self.x =`)."""
        return self.lines is not None


@dataclass
class ClassInfo:
    qualname: str
    bases: list[str]  # qualnames where they resolve, else bare names
    methods: set[str] = field(default_factory=set)


class VllmIndex:
    """Modules, classes, functions, methods and names of one vLLM source tree."""

    def __init__(self, root: Path):
        self.root = root  # the directory that holds the `vllm` package
        self.definitions: dict[str, Definition] = {}
        self.classes: dict[str, ClassInfo] = {}
        self.star_imports: dict[str, list[str]] = defaultdict(list)  # module -> modules it star-imports
        self.dynamic: dict[str, str] = {}  # modules with a __getattr__ -> their source
        self.instances: dict[str, str] = {}  # module-level NAME = Class(...) -> the class's qualname
        self.attributes: set[str] = set()  # names vLLM's classes define: self.x =, class x, def x
        for path in sorted((root / "vllm").rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            except SyntaxError:
                continue
            self._index_module(module, path, tree)

    def _index_module(self, module: str, path: Path, tree: ast.Module) -> None:
        self.definitions[module] = Definition(module, path, None)
        imported: dict[str, str] = {}
        # Top-level statements, and those of top-level `if` blocks (`if TYPE_CHECKING:`,
        # version switches): where a module binds its names.
        body = [
            n
            for top in tree.body
            for n in ([top, *top.body, *top.orelse] if isinstance(top, ast.If) else [top])
        ]
        for node in body:
            if isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    parts = module.split(".")
                    keep = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
                    source = ".".join(parts[:keep] + ([node.module] if node.module else []))
                for alias in node.names:
                    if alias.name == "*":
                        self.star_imports[module].append(source)
                    else:
                        imported[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                self.dynamic[module] = path.read_text(encoding="utf-8", errors="replace")
        for name in imported:  # re-exports count as defined here
            self.definitions.setdefault(f"{module}.{name}", Definition(f"{module}.{name}", path, None))
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.definitions[f"{module}.{node.name}"] = Definition(f"{module}.{node.name}", path, node)
            elif isinstance(node, ast.ClassDef):
                self._index_class(module, path, node, imported)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        self.definitions[f"{module}.{target.id}"] = Definition(
                            f"{module}.{target.id}", path, node
                        )
                        # NAME = Class(...), or NAME: Class: an instance, whose members are the class's.
                        kind = node.value.func if isinstance(node.value, ast.Call) else None
                        if isinstance(node, ast.AnnAssign) and kind is None:
                            kind = node.annotation
                        if isinstance(kind, ast.Name):
                            self.instances[f"{module}.{target.id}"] = imported.get(
                                kind.id, f"{module}.{kind.id}"
                            )

    def _index_class(self, module: str, path: Path, node: ast.ClassDef, imported: dict[str, str]) -> None:
        qualname = f"{module}.{node.name}"
        self.definitions[qualname] = Definition(qualname, path, node)
        bases = []
        for base in node.bases:
            name = ast.unparse(base).split("[")[0]
            bases.append(imported.get(name, f"{module}.{name}" if "." not in name else name))
        info = ClassInfo(qualname, bases)
        self.classes[qualname] = info
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                info.methods.add(item.name)
                self.attributes.add(item.name)
                self.definitions[f"{qualname}.{item.name}"] = Definition(
                    f"{qualname}.{item.name}", path, item
                )
                for sub in ast.walk(item):
                    stored = isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
                    if stored and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                        self.attributes.add(sub.attr)
                        self.definitions.setdefault(
                            f"{qualname}.{sub.attr}", Definition(f"{qualname}.{sub.attr}", path, None)
                        )
            elif isinstance(item, ast.Assign | ast.AnnAssign):
                for target in item.targets if isinstance(item, ast.Assign) else [item.target]:
                    if isinstance(target, ast.Name):
                        self.attributes.add(target.id)
                        self.definitions[f"{qualname}.{target.id}"] = Definition(
                            f"{qualname}.{target.id}", path, item
                        )

    def lookup(self, qualname: str, _seen: frozenset = frozenset()) -> Definition | None:
        """Where a dotted name is defined: directly, through a re-export, a star import or
        a module's lazy `__getattr__`, or as a member of a class (or of a module-level
        instance of one) or of its ancestors."""
        if qualname in _seen:
            return None
        seen = _seen | {qualname}
        found = self.definitions.get(qualname)
        if found is not None and not found.bound_here and found.qualname != qualname.rsplit(".", 1)[0]:
            module, _, name = qualname.rpartition(".")
            target = _import_target(found.path, name) if module in self.definitions else None
            if target is not None and target != qualname:
                return self.lookup(target, seen) or found
        if found is not None:
            return found
        owner, _, member = qualname.rpartition(".")
        for source in self.star_imports.get(owner, []):
            found = self.lookup(f"{source}.{member}", seen)
            if found is not None:
                return found
        if owner in self.dynamic and re.search(
            rf"[\"']{re.escape(member)}[\"']|\b{re.escape(member)}\b", self.dynamic[owner]
        ):
            return Definition(qualname, self.definitions[owner].path, None)
        cls = self.resolve_class(owner) or self.resolve_class(self.instances.get(owner, ""))
        if cls is None and owner:
            owner_definition = self.lookup(owner, seen)
            if owner_definition is not None and owner_definition.qualname in self.instances:
                cls = self.resolve_class(self.instances[owner_definition.qualname])
            elif owner_definition is not None:
                cls = self.resolve_class(owner_definition.qualname)
        if cls is not None:
            for ancestor in self.ancestors(cls):
                found = self.definitions.get(f"{ancestor}.{member}")
                if found is not None:
                    return found
        return None

    def resolve_class(self, qualname: str) -> str | None:
        """A class's qualname, following re-exports (`vllm.multimodal.inputs.X` may be defined
        in a submodule and imported there)."""
        seen = set()
        while qualname not in self.classes and qualname not in seen:
            seen.add(qualname)
            definition = self.definitions.get(qualname)
            if definition is None or definition.bound_here:
                return None
            module, _, name = qualname.rpartition(".")
            source = _import_target(definition.path, name)
            if source is None:
                return None
            qualname = source
        return qualname if qualname in self.classes else None

    def ancestors(self, qualname: str) -> list[str]:
        out, todo = [], [qualname]
        while todo:
            current = self.resolve_class(todo.pop(0)) or ""
            if current and current not in out:
                out.append(current)
                todo.extend(self.classes[current].bases)
        return out


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8", errors="replace"))


def _import_target(path: Path, name: str) -> str | None:
    tree = _parsed(path)
    module = ".".join(path.parts[path.parts.index("vllm") :]).removesuffix(".py").removesuffix(".__init__")
    body = [
        n for top in tree.body for n in ([top, *top.body, *top.orelse] if isinstance(top, ast.If) else [top])
    ]
    for node in body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    if node.level == 0:
                        return f"{node.module}.{alias.name}"
                    parts = module.split(".")
                    keep = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
                    return ".".join(parts[:keep] + ([node.module] if node.module else []) + [alias.name])
    return None


# ---- what our code uses ----------------------------------------------------------------------
@dataclass(frozen=True)
class Use:
    kind: str  # import, override, patch, call (an inherited method), attribute
    name: str  # vllm.dotted.Name, or .attr
    where: str  # file:line


def _not_vllms() -> set[str]:
    """Attribute names that are other libraries' (torch, numpy, pydantic, Hugging Face's
    configs and processors, builtins): reading them is not relying on vLLM."""
    import numpy as np
    import pydantic
    import torch

    names: set[str] = set()
    import argparse as _argparse

    import prometheus_client
    import transformers

    kinds = (
        torch.Tensor, torch.nn.Module, torch.nn.Linear, torch.dtype, torch.device, torch.Generator,
        np.ndarray,
        dict, list, str, tuple, set, bytes, pydantic.BaseModel, Path, _argparse.ArgumentParser,
        transformers.PreTrainedTokenizerBase, transformers.ProcessorMixin, prometheus_client.Counter,
        prometheus_client.Histogram, prometheus_client.Gauge,
    )  # fmt: skip
    for kind in kinds:
        names.update(dir(kind))
    names.update(_hf_config_fields())
    return names


def _hf_config_fields() -> set[str]:
    """Every field of the Hugging Face configs of the supported families (and of their
    sub-configs), and the attributes of their video processors."""
    import transformers

    fields: set[str] = set(dir(transformers.PretrainedConfig))

    def walk(config) -> None:
        for key, _value in config.to_dict().items():
            fields.add(key)
            sub = getattr(config, key, None)
            if isinstance(sub, transformers.PretrainedConfig):
                walk(sub)

    for name in ("Qwen2_5_VLConfig", "Qwen3VLConfig", "LlavaOnevisionConfig"):
        walk(getattr(transformers, name)())
    for name in ("Qwen2VLVideoProcessor", "LlavaOnevisionVideoProcessor"):
        processor = getattr(transformers, name, None)
        if processor is not None:
            fields.update(vars(processor()).keys())
            fields.update(dir(processor))
    fields.update({"get_text_config", "unk_token_id", "convert_tokens_to_ids", "decode", "encode"})
    return fields


def _defined_by_us(trees: dict[Path, ast.Module]) -> set[str]:
    """Names our code defines: functions, classes, our classes' class-level names (fields
    of dataclasses and pydantic models), and what our classes' methods assign to `self`.
    An assignment anywhere else (a patch's wrapper, a config object) defines nothing."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.add(node.name)
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        names.update(t.id for t in item.targets if isinstance(t, ast.Name))
                    elif isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        for sub in ast.walk(item):
                            if (
                                isinstance(sub, ast.Attribute)
                                and isinstance(sub.ctx, ast.Store)
                                and isinstance(sub.value, ast.Name)
                                and sub.value.id == "self"
                            ):
                                names.add(sub.attr)
    return names


def find_uses(roots: list[Path], index: VllmIndex, repo: Path = REPO) -> list[Use]:
    files = [p for root in roots for p in sorted(root.rglob("*.py"))]
    trees = {path: ast.parse(path.read_text()) for path in files}
    ours = _defined_by_us(trees)
    others = _not_vllms()
    imports = {path: _vllm_imports(tree) for path, tree in trees.items()}
    contexts = _class_contexts(trees, imports, index)
    uses: list[Use] = []
    for path, tree in trees.items():
        where = str(path.relative_to(repo))
        imported = imports[path]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                for alias in node.names:
                    name = alias.asname or alias.name
                    if name in imported and (isinstance(node, ast.Import) or node.module):
                        uses.append(Use("import", imported[name], f"{where}:{node.lineno}"))
        modules = {  # other libraries bound to names: torch.empty is torch's
            alias.asname or alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name.split(".")[0] != "vllm"
        }
        looks_at_attributes = any(str(path).startswith(str(repo / place)) for place in ATTRIBUTES_IN)
        # Outside our classes (a patch's wrapper), `self` is an instance of what the file imports.
        file_context = _methods_by_root(
            [a for q in imported.values() if (c := index.resolve_class(q)) for a in index.ancestors(c)], index
        )
        owner_of: dict[ast.AST, dict[str, list[str]]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = contexts.get(node.name, {})
                for item in ast.walk(node):
                    owner_of.setdefault(item, methods)
                for item in node.body:
                    private = isinstance(item, ast.FunctionDef) and item.name.startswith("_")
                    if private and not item.name.startswith("__"):
                        for owner in methods.get(item.name, []):
                            uses.append(Use("override", f"{owner}.{item.name}", f"{where}:{item.lineno}"))
        for node in ast.walk(tree):
            line = f"{where}:{getattr(node, 'lineno', 0)}"
            if not looks_at_attributes:
                break
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute):
                        receiver = target.value
                        if isinstance(receiver, ast.Name) and receiver.id in imported:
                            uses.append(Use("patch", f"{imported[receiver.id]}.{target.attr}", line))
                        elif target.attr in index.attributes and target.attr not in ours:
                            uses.append(Use("patch", f".{target.attr}", line))
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                methods = owner_of.get(node, file_context)
                uses += _attribute_read(node, line, imported, modules, methods, index, ours, others)
    return uses


def _class_contexts(
    trees: dict[Path, ast.Module], imports: dict[Path, dict[str, str]], index: VllmIndex
) -> dict[str, dict[str, list[str]]]:
    """For each of our classes, the vLLM methods it can override or call on `self`: those
    of every vLLM class it is composed with, directly or as a mixin of a family class
    (method name -> the most general vLLM classes defining it)."""
    bases: dict[str, list[str]] = {}  # our class -> its bases' names
    vllm_bases: dict[str, list[str]] = {}  # our class -> its vLLM bases, resolved
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names = [ast.unparse(b).split("[")[0] for b in node.bases]
                bases[node.name] = names
                resolved = [index.resolve_class(imports[path][n]) for n in names if n in imports[path]]
                vllm_bases[node.name] = [c for c in resolved if c]

    def our_ancestors(name: str) -> set[str]:
        out, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current in bases and current not in out:
                out.add(current)
                todo.extend(bases[current])
        return out

    composed: dict[str, list[str]] = defaultdict(list)  # our class -> the vLLM classes in its MROs
    for family, family_bases in vllm_bases.items():
        hierarchy = [a for c in family_bases for a in index.ancestors(c)]
        for mixin in our_ancestors(family):
            composed[mixin] += hierarchy
    return {name: _methods_by_root(classes, index) for name, classes in composed.items()}


def _methods_by_root(classes: list[str], index: VllmIndex) -> dict[str, list[str]]:
    """Method name -> the most general of `classes` defining it: an override must fit the
    method it replaces at its root (the families' own versions inherit that contract)."""
    defining: dict[str, list[str]] = defaultdict(list)
    for cls in dict.fromkeys(classes):
        for method in index.classes[cls].methods:
            defining[method].append(cls)
    return {
        name: [c for c in owners if not any(o != c and o in index.ancestors(c) for o in owners)]
        for name, owners in defining.items()
    }


def _vllm_imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> vLLM qualname, for every vLLM import of a file."""
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vllm":
                    imported[alias.asname or alias.name] = alias.name
    return imported


def _attribute_read(node, line, imported, modules, methods, index, ours, others) -> list[Use]:
    receiver = node.value
    if isinstance(receiver, ast.Name) and receiver.id in imported:  # a member of an imported name
        return [Use("import", f"{imported[receiver.id]}.{node.attr}", line)]
    if node.attr not in index.attributes or node.attr.startswith("__") or node.attr in ours:
        return []
    root = receiver
    while isinstance(root, ast.Attribute):  # torch.accelerator.synchronize: torch's
        root = root.value
    if isinstance(root, ast.Name) and root.id in modules:
        return []
    if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
        if node.attr in methods:  # an inherited method: name the classes that define it
            return [Use("call", f"{owner}.{node.attr}", line) for owner in methods[node.attr]]
        return [Use("attribute", f".{node.attr}", line)]
    if node.attr in others:
        return []
    return [Use("attribute", f".{node.attr}", line)]


# ---- the ledger -------------------------------------------------------------------------------
@dataclass
class Entry:
    number: int
    title: str
    items: list[str]  # **Internals:** what the check finds in the code
    also: list[str] = field(default_factory=list)  # **Also relied on:** what it cannot find


def read_ledger(path: Path = LEDGER) -> list[Entry]:
    text = path.read_text()
    entries = []
    for match in re.finditer(r"^## (\d+)\. (.+?)\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        body = match.group(3)
        entries.append(
            Entry(
                int(match.group(1)),
                match.group(2).strip(),
                _listed(body, "Internals"),
                _listed(body, "Also relied on"),
            )
        )
    return entries


def _listed(body: str, heading: str) -> list[str]:
    listed = re.search(rf"^- \*\*{heading}:\*\*(.*?)(?=^- \*\*|^#|\Z)", body, re.M | re.S)
    return re.findall(r"`([^`]+)`", listed.group(1)) if listed else []


def check(uses: list[Use], entries: list[Entry]) -> list[str]:
    """What is wrong: unlisted uses, listed items no longer used, entries out of order."""
    problems = []
    numbers = [e.number for e in entries]
    if numbers != list(range(1, len(entries) + 1)):
        problems.append(f"ledger entries are not numbered 1..{len(entries)} in order: {numbers}")
    listed = {item: entry for entry in entries for item in entry.items}
    by_name: dict[str, list[Use]] = defaultdict(list)
    for use in uses:
        by_name[use.name].append(use)
    for name, found in sorted(by_name.items()):
        if name not in listed:
            places = ", ".join(sorted({u.where for u in found})[:3])
            problems.append(f"unlisted {found[0].kind}: {name} ({places})")
    for item, entry in sorted(listed.items()):
        if item not in by_name:
            problems.append(f"entry {entry.number} lists {item}, which the code no longer uses")
    return problems


# ---- against another vLLM ---------------------------------------------------------------------
def compare(item: str, base: VllmIndex, other: VllmIndex) -> tuple[str, str]:
    """(verdict, detail) of one ledger item in `other` against `base`."""
    if item.startswith("."):
        return ("still defined", "") if item[1:] in other.attributes else ("GONE", "no class defines it")
    if item.startswith("env:"):  # an environment variable vLLM reads (vllm/envs.py)
        known = f'"{item[4:]}"' in (other.root / "vllm" / "envs.py").read_text()
        return ("still read", "") if known else ("GONE", "vllm/envs.py no longer reads it")
    here, there = _definition(base, item), _definition(other, item)
    if here is None:
        return "not resolved", "the check cannot find it in the installed vLLM either"
    if there is None:
        return "GONE", "not found"
    if not (here.bound_here and there.bound_here):
        return "exists", ""
    if here.signature is not None and there.signature is not None and here.signature != there.signature:
        return "SIGNATURE CHANGED", f"({here.signature}) -> ({there.signature})"
    old_source, new_source = _source(here), _source(there)
    if old_source == new_source:
        return "unchanged", ""
    diff = difflib.unified_diff(
        old_source.splitlines(), new_source.splitlines(), "installed", "other", lineterm=""
    )
    return "source changed", "\n".join(diff)


def _definition(index: VllmIndex, item: str) -> Definition | None:
    return index.lookup(item)


def _source(definition: Definition) -> str:
    first, last = definition.lines
    lines = definition.path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[first - 1 : last])


def upgrade_report(
    entries: list[Entry], base: VllmIndex, trees: dict[str, VllmIndex], base_version: str
) -> str:
    lines = [
        "# What moving from vLLM " + base_version + " would break, entry by entry",
        "",
        "Generated from the ledger (docs/patches.md) by `scripts/check_vllm_internals.py`: every "
        "internal an entry lists, looked up in each vLLM source tree against the installed "
        + base_version
        + ". GONE and SIGNATURE CHANGED break the plugin; source changed needs a read of the diff.",
        "",
        "To reproduce (the GPU wheels carry the Python sources; the CPU wheel stays " + base_version + "):",
        "",
        "```bash",
        "for v in " + " ".join(trees) + "; do",
        "  pip download --no-deps --only-binary :all: -d wheels-$v vllm==$v",
        "  mkdir -p src-$v && (cd src-$v && unzip -q ../wheels-$v/*.whl 'vllm/*.py')",
        "done",
        "python scripts/check_vllm_internals.py --vllm-src "
        + " ".join(f"src-{v}" for v in trees)
        + " --report docs/vllm-upgrade.md",
        "```",
        "",
    ]
    summary = ["| entry | " + " | ".join(trees) + " |", "|---|" + "---|" * len(trees)]
    details = []
    for entry in entries:
        verdicts = {}
        details += [f"## {entry.number}. {entry.title}", ""]
        for version, other in trees.items():
            counts: dict[str, int] = defaultdict(int)
            rows = []
            for item in entry.items + entry.also:
                verdict, detail = compare(item, base, other)
                counts[verdict] += 1
                rows.append((item, verdict, detail))
            broken = [r for r in rows if r[1] in ("GONE", "SIGNATURE CHANGED")]
            changed = [r for r in rows if r[1] == "source changed"]
            verdicts[version] = (
                f"{len(broken)} broken" if broken else (f"{len(changed)} changed" if changed else "ok")
            )
            details += [f"### vLLM {version}: {verdicts[version]}", "", "| internal | verdict |", "|---|---|"]
            for item, verdict, detail in rows:
                shown = f": {detail}" if detail and verdict != "source changed" else ""
                details.append(f"| `{item}` | {verdict}{shown} |")
            for item, _, detail in changed:
                details += ["", f"<details><summary><code>{item}</code>: the diff</summary>", "", "```diff",
                            _clip(detail), "```", "</details>"]  # fmt: skip
            details.append("")
        summary.append(f"| {entry.number}. {entry.title} | " + " | ".join(verdicts.values()) + " |")
    lines += ["## Summary", "", *summary, "", *details]
    if DESIGN.exists():
        lines += ["", DESIGN.read_text()]
    return "\n".join(lines).rstrip() + "\n"


def _clip(diff: str, limit: int = 120) -> str:
    rows = diff.splitlines()
    return "\n".join(rows[:limit] + ([f"... ({len(rows) - limit} more lines)"] if len(rows) > limit else []))


def load_index(root: Path) -> VllmIndex:
    """The index of a vLLM tree, cached under runs/ (parsing vLLM takes ~20 s; `make lint`
    and the tests share it). The key is the tree's path, its version and its files' sizes
    and times, so any change to the tree rebuilds it."""
    files = sorted((root / "vllm").rglob("*.py"))
    stamp = hashlib.sha256(
        "".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files).encode()
    ).hexdigest()[:16]
    cache = CACHE / f"vllm-index-{stamp}.pickle"
    if cache.exists():
        try:
            return pickle.loads(cache.read_bytes())
        except Exception:  # a stale or partial cache is rebuilt
            pass
    index = VllmIndex(root)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(index))
    partial.replace(cache)
    return index


def installed_vllm() -> tuple[Path, str]:
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    root = Path(spec.origin).parent.parent
    version = re.search(r"__version__ = version = '([^']+)'", (root / "vllm" / "_version.py").read_text())
    return root, version.group(1) if version else "installed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", type=Path, default=LEDGER)
    parser.add_argument("--scan", type=Path, nargs="+", default=[REPO / d for d in SCANNED])
    parser.add_argument(
        "--vllm-src", type=Path, nargs="*", default=[], help="other vLLM trees (parent of vllm/)"
    )
    parser.add_argument("--report", type=Path, help="write the comparison as markdown here")
    args = parser.parse_args(argv)
    root, version = installed_vllm()
    base = load_index(root)
    uses = find_uses(args.scan, base, repo=Path(args.scan[0]).resolve().parent)
    entries = read_ledger(args.ledger)
    problems = check(uses, entries)
    for problem in problems:
        print(problem)
    print(f"{len(set(u.name for u in uses))} vLLM internals in use, {len(entries)} ledger entries, "
          f"{len(problems)} problems")  # fmt: skip
    if args.vllm_src:
        trees = {}
        for tree in args.vllm_src:
            match = re.search(r"(\d+\.\d+\.\d+)", str(tree))
            trees[match.group(1) if match else str(tree)] = load_index(tree)
        report = upgrade_report(entries, base, trees, version)
        if args.report:
            args.report.write_text(report)
            print(f"wrote {args.report}")
        else:
            print(report)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
