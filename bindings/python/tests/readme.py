"""The repository README's Python examples, so tests run them as written."""

import pathlib


def readme_python_blocks():
    """The ```python blocks of the README's "Use it from Python" section."""
    readme = (pathlib.Path(__file__).parents[3] / "README.md").read_text("utf-8")
    section = next(s for s in readme.split("\n## ") if s.startswith("Use it from Python"))
    blocks = [part.split("```", 1)[0] for part in section.split("```python\n")[1:]]
    assert len(blocks) == 2, blocks
    return blocks
