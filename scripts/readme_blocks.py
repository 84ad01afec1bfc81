"""The fenced code blocks of README.md, so scripts/test.sh and tests/test_readme.py run the README's own text.

Usage: python3 scripts/readme_blocks.py LANG INDEX   (prints block INDEX of language LANG, e.g. `sh 0`)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(lang: str, text: str | None = None) -> list[str]:
    """Every fenced block of `lang` in the README (or in `text`), in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    return [m.group(2) for m in _FENCE.finditer(text) if m.group(1) == lang]


def following(block: str, text: str | None = None) -> str:
    """The fenced block right after `block` (whatever its language): the output the README shows for it."""
    text = README.read_text(encoding="utf-8") if text is None else text
    fences = list(_FENCE.finditer(text))
    i = next(i for i, m in enumerate(fences) if m.group(2) == block)
    return fences[i + 1].group(2)


def shell_commands(block: str) -> list[tuple[str, str]]:
    """The `$ command` lines of a console block, each with the output shown under it."""
    out: list[tuple[str, str]] = []
    continued = False
    for line in block.splitlines():
        if line.startswith("$ ") or continued:
            cmd = line[2:] if not continued else out.pop()[0] + "\n" + line
            out.append((cmd, ""))
            continued = line.endswith("\\")
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


if __name__ == "__main__":
    lang, index = sys.argv[1], int(sys.argv[2])
    sys.stdout.write(blocks(lang)[index])
