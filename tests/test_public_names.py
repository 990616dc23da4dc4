"""Every npvae name the README and the guides in docs/ show resolves: ``npvae.a.b`` in
their text and each name of their ``from npvae... import ...`` lines."""
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUIDES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOTTED = re.compile(r"\bnpvae(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"^\s*from (npvae(?:\.\w+)*) import \(?([\w\s,]+?)\)?\s*$", re.M | re.S)


def resolve(name: str):
    """The object ``name`` (dotted) names: the longest importable module, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def shown_names() -> set[str]:
    names = set()
    for path in GUIDES:
        text = path.read_text()
        names |= {n for n in DOTTED.findall(text) if not re.search(r"\.(h5|mat|py|md)$", n)}
        for block in re.findall(r"```(?:python|py)\n(.*?)```", text, re.S):
            for module, imported in FROM_IMPORT.findall(block.replace("(\n", "(").replace(",\n", ", ")):
                names |= {f"{module}.{n.strip()}" for n in imported.split(",") if n.strip()}
    return names


def test_the_guides_show_names():
    names = shown_names()
    assert {"npvae.load_model", "npvae.train", "npvae.list_models", "npvae.layers.Conv2d"} <= names


@pytest.mark.parametrize("name", sorted(shown_names()))
def test_each_name_the_guides_show_resolves(name):
    assert resolve(name) is not None
