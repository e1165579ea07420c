"""The package's import graph keeps its layers (DESIGN.md): read with ast, no import run.

Every `import` and `from ... import` of lavin_jax counts, at any depth (function-level
imports too). The rules:
  - a module imports only from its own layer or a lower one (LAYERS, lowest first);
  - config modules import only config modules; models/ and flow/ import only configs
    (and themselves);
  - no import cycle between modules, nor between subpackages.
The checker is tested on small packages holding the cycles it exists to prevent.
"""

import ast
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Layers, lowest first; a name is the first component under lavin_jax.
LAYERS = (
  ("configs",),
  ("io",),
  ("models",),
  ("flow",),
  ("data",),
  ("convert",),
  ("parallel",),
  ("train", "inference", "eval"),
  ("cli",),
  ("demo",),
)
ONLY_CONFIGS = ("configs", "models", "flow")  # may import nothing else of the package


def _module_name(path: pathlib.Path, package_dir: pathlib.Path) -> str:
  parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _imports(
  tree: ast.AST, module: str, is_package: bool, modules: set[str], root: str
) -> set[str]:
  """The package modules `tree` imports (resolving `from x import submodule`)."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    for name in names:
      if name == root or name.startswith(root + "."):
        while name not in modules and "." in name:
          name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
          found.add(name)
  return found


def import_graph(package_dir: pathlib.Path) -> dict[str, set[str]]:
  """{module: modules of the package it imports} for every .py file under package_dir."""
  files = {_module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
  root = package_dir.name
  return {
    m: _imports(ast.parse(p.read_text()), m, p.name == "__init__.py", set(files), root)
    for m, p in files.items()
  }


def _part(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one node (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def violations(package_dir: pathlib.Path) -> list[str]:
  """Every broken rule of the module docstring, one line each."""
  graph = import_graph(package_dir)
  layer = {name: i for i, names in enumerate(LAYERS) for name in names}
  problems = []
  for module, imported in sorted(graph.items()):
    part = _part(module)
    for target in sorted(imported):
      tpart = _part(target)
      if not part or not tpart or part == tpart:
        continue
      if part in ONLY_CONFIGS and tpart != "configs":
        problems.append(f"{module} imports {target}: {part} may import only configs")
      elif layer.get(tpart, -1) > layer.get(part, len(LAYERS)):
        problems.append(f"{module} imports {target}, a higher layer")
  problems += [f"module cycle: {' -> '.join(c)}" for c in _cycles(graph)]
  parts = {}
  for module, imported in graph.items():
    parts.setdefault(_part(module), set()).update(
      _part(t) for t in imported if _part(t) != _part(module)
    )
  problems += [f"subpackage cycle: {' -> '.join(c)}" for c in _cycles(parts)]
  return problems


def test_every_layer_is_named():
  names = {
    p.stem if p.is_file() else p.name
    for p in (ROOT / "lavin_jax").iterdir()
    if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
  }
  assert names == {n for group in LAYERS for n in group}


def test_lavin_jax_keeps_its_layers():
  assert violations(ROOT / "lavin_jax") == []


def _package(tmp_path, files: dict[str, str]) -> pathlib.Path:
  root = tmp_path / "lavin_jax"
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
  for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
    (d / "__init__.py").touch()
  return root


@pytest.mark.parametrize(
  "files, expected",
  [
    # inference/pipeline imports the J-DiT trainer while the trainer imports inference.
    (
      {
        "inference/pipeline.py": "from lavin_jax.train import dit\n",
        "train/dit.py": "from lavin_jax.inference import bundle\n",
        "inference/bundle.py": "",
      },
      "subpackage cycle: inference -> train",
    ),
    # sources imports synthetic inside a function, synthetic imports sources.
    (
      {
        "data/sources.py": "def f():\n  from lavin_jax.data import synthetic\n",
        "data/synthetic.py": "from lavin_jax.data import sources\n",
      },
      "module cycle: lavin_jax.data.sources -> lavin_jax.data.synthetic",
    ),
    # A config function importing the flow and data code.
    (
      {
        "configs/train.py": "def get_config():\n  from lavin_jax import flow\n",
        "flow/transport.py": "",
      },
      "may import only configs",
    ),
    (
      {
        "configs/train.py": "def get_config():\n  from lavin_jax.data import pipeline\n",
        "data/pipeline.py": "",
      },
      "may import only configs",
    ),
    # The ST-VAE trainer importing the J-DiT trainer is fine; models importing data is not.
    (
      {"models/jdit.py": "from lavin_jax.data import tasks\n", "data/tasks.py": ""},
      "models may import only configs",
    ),
    ({"data/pipeline.py": "import lavin_jax.train.dit\n", "train/dit.py": ""}, "a higher layer"),
    ({"io/files.py": "from .. import demo\n", "demo.py": ""}, "a higher layer"),
  ],
)
def test_the_checker_finds_each_kind_of_violation(tmp_path, files, expected):
  problems = violations(_package(tmp_path, files))
  assert any(expected in p for p in problems), problems


def test_the_checker_accepts_a_clean_package(tmp_path):
  root = _package(
    tmp_path,
    {
      "configs/models.py": "from lavin_jax.configs import tasks\n",
      "configs/tasks.py": "",
      "models/jdit.py": "from lavin_jax import configs\nfrom . import layers\n",
      "models/layers.py": "",
      "train/dit.py": "def f():\n  from lavin_jax.models import jdit\n",
    },
  )
  assert violations(root) == []
