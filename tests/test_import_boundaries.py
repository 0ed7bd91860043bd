"""The "may import" table of docs/architecture.md, enforced on the source tree.

The table is the one source: this test reads it, reads every import statement under
src/hedgerow (including imports inside functions), and fails on any import of one Hedgerow
package by another that the table does not allow. A row's "may import" cell lists the
allowed packages in backticks (`mqtt`, `hedgerow.client`); `everything` allows all; a part
after a semicolon of the form "`pki` only in `core/_keytool_child.py`" allows one package
in the named files only.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SRC = ROOT / "src"

_TICKS = re.compile(r"`([^`]+)`")


@dataclass
class Rule:
    allowed: set[str] = field(default_factory=set)
    everything: bool = False
    only_in: dict[str, set[str]] = field(default_factory=dict)  # package -> files


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {self.imported}"


def top_level_names(src: Path) -> set[str]:
    base = src / "hedgerow"
    names = {p.name for p in base.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for p in base.glob("*.py") if p.stem not in {"__init__", "__main__"}}
    return names


def parse_rules(doc_text: str, names: set[str]) -> dict[str, Rule]:
    """Read the package table ("| package | what lives there | may import |")."""
    rules: dict[str, Rule] = {}
    in_table = False
    for line in doc_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] == "package" and cells[2] == "may import":
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if set(cells[0]) <= {"-", ":"}:
            continue
        packages = [_short(t) for t in _TICKS.findall(cells[0])]
        rule = Rule()
        for part in cells[2].split(";"):
            if "everything" in part:
                rule.everything = True
                continue
            ticks = [_short(t) for t in _TICKS.findall(part)]
            if " only in " in part:
                files = {t for t in _TICKS.findall(part) if t.endswith(".py")}
                for name in ticks:
                    if name in names:
                        rule.only_in.setdefault(name, set()).update(files)
            else:
                rule.allowed |= {t for t in ticks if t in names}
        for package in packages:
            rules[package] = rule
    return rules


def _short(name: str) -> str:
    return name.removeprefix("hedgerow.").split(".")[0]


def imports_of(path: Path, module_parts: list[str]) -> list[tuple[int, str]]:
    """Every `hedgerow.X` a file imports, as (line, X), X a top-level name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(module_parts) - node.level + (1 if is_package else 0)
                base = module_parts[:keep]
                modules = [".".join([*base, node.module] if node.module else base)]
            elif node.module == "hedgerow":
                modules = [f"hedgerow.{alias.name}" for alias in node.names]
            elif node.module:
                modules = [node.module]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "hedgerow" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def violations(src: Path, doc_text: str) -> list[Violation]:
    names = top_level_names(src)
    rules = parse_rules(doc_text, names)
    found: list[Violation] = []
    base = src / "hedgerow"
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base)
        importer = rel.parts[0].removesuffix(".py")
        if importer in {"__init__", "__main__"}:
            continue
        rule = rules.get(importer)
        parts = ["hedgerow", *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        for line, imported in imports_of(path, parts):
            if imported == importer or imported == "__version__":
                continue
            if rule is None:
                found.append(Violation(rel.as_posix(), line, importer, f"{imported} (no row)"))
                continue
            if rule.everything or imported in rule.allowed:
                continue
            if rel.as_posix() in {_strip(f, importer) for f in rule.only_in.get(imported, ())}:
                continue
            found.append(Violation(rel.as_posix(), line, importer, imported))
    return found


def _strip(file: str, package: str) -> str:
    """`core/keytool.py` as written in the table, relative to src/hedgerow."""
    return file if file.startswith(f"{package}/") else f"{package}/{file}"


def test_the_table_has_a_row_for_every_package() -> None:
    names = top_level_names(SRC)
    rules = parse_rules(DOC.read_text(encoding="utf-8"), names)
    assert names - set(rules) == set(), "add a row to docs/architecture.md's package table"


def test_the_source_tree_keeps_the_table() -> None:
    found = violations(SRC, DOC.read_text(encoding="utf-8"))
    assert found == [], "\n".join(map(str, found))


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for name, text in {"hedgerow/__init__.py": "", **files}.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return src


DOC_SAMPLE = """
| package | what lives there | may import |
|---|---|---|
| `hedgerow.mqtt` | codec | stdlib only |
| `hedgerow.core` | daemon | `mqtt`; `pki` only in `core/keytool.py` |
| `hedgerow.pki` | keys | `cryptography` |
| `hedgerow.cli` | command | everything |
"""


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        ("hedgerow/mqtt/codec.py", "from hedgerow.core import x\n", "core"),
        ("hedgerow/mqtt/codec.py", "def f():\n    import hedgerow.pki\n", "pki"),
        ("hedgerow/mqtt/sub/x.py", "from ...core import daemon\n", "core"),
        ("hedgerow/core/daemon.py", "from hedgerow import pki\n", "pki"),
    ],
)
def test_a_wrong_import_is_caught(tmp_path: Path, file: str, text: str, expected: str) -> None:
    src = _tree(
        tmp_path,
        {
            "hedgerow/mqtt/__init__.py": "",
            "hedgerow/mqtt/sub/__init__.py": "",
            "hedgerow/core/__init__.py": "",
            "hedgerow/cli/__init__.py": "",
            "hedgerow/pki.py": "",
            file: text,
        },
    )
    found = violations(src, DOC_SAMPLE)
    assert [v.imported for v in found] == [expected]


def test_allowed_imports_pass(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "hedgerow/mqtt/__init__.py": "from . import codec\nfrom .codec import x\n",
            "hedgerow/mqtt/codec.py": "x = 1\n",
            "hedgerow/core/__init__.py": "from hedgerow.mqtt import codec\n",
            "hedgerow/core/keytool.py": "from hedgerow import pki\n",
            "hedgerow/cli/__init__.py": "import hedgerow.core\nfrom hedgerow import pki\n",
            "hedgerow/pki.py": "import cryptography\n",
        },
    )
    assert violations(src, DOC_SAMPLE) == []
