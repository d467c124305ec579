"""The docs match the code: every ``playworld ...`` and ``python benchmarks/...`` command written in
README.md and docs/*.md names a command that exists, and every ``--flag`` it passes is one that
command accepts (a renamed or removed flag would otherwise leave the docs telling users to type
something that fails)."""

from __future__ import annotations

import re
import warnings
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
START = re.compile(r"^(playworld [a-z]|python benchmarks/)")


def doc_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for each command in fenced code blocks (continuation lines joined,
    trailing comments cut) and in inline code spans."""
    out, in_block, buf, first = [], False, "", 0
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("```"):
            in_block, buf = not in_block, ""
            continue
        if in_block:
            s = "" if s.startswith("#") else re.split(r"\s+#", s)[0].rstrip()
            if not buf:
                if not START.match(s):
                    continue
                first = i
            buf = f"{buf} {s}".strip()
            if buf.endswith("\\"):
                buf = buf[:-1].rstrip()
                continue
            out.append((first, buf))
            buf = ""
        else:
            out += [(i, m.group(1)) for m in re.finditer(r"`((?:playworld [a-z]|python benchmarks/)[^`]+)`", line)]
    return out


def flags(words: list[str]) -> list[str]:
    """The ``--flag`` names in a command's words (``--x=1``, ``[--x``, ``--x]`` count as ``--x``)."""
    found = []
    for w in words:
        w = w.strip("[]|(),;")
        if w.startswith("--") and len(w) > 2:
            found.append(w.split("=")[0])
    return found


@cache
def cli_flags(spec: str) -> frozenset[str]:
    import tyro.extras

    from playworld.cli import _load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parser = tyro.extras.get_parser(_load(spec))
    return frozenset(s for action in parser._actions for s in action.option_strings)


@cache
def benchmark_flags(script: str) -> frozenset[str]:
    source = (ROOT / script).read_text()
    return frozenset(re.findall(r"""add_argument\(\s*["'](--[\w-]+)["']""", source))


def resolve(words: list[str], where: str, bad: list[str]) -> list[str]:
    """The command classes that the words after ``playworld`` name (none for ``...`` or an error,
    which is appended to ``bad``)."""
    from playworld.cli import COMMANDS

    groups, rest = [COMMANDS], list(words)
    while any(isinstance(g, dict) for g in groups):
        if not rest or rest[0] == "...":
            return []
        nxt = []
        for g in groups:
            for word in rest[0].split("|"):
                if word not in g:
                    bad.append(f"{where}: unknown command word {word!r}")
                    return []
                nxt.append(g[word])
        groups, rest = nxt, rest[1:]
    return groups


def problems(path: Path) -> list[str]:
    bad: list[str] = []
    for line, cmd in doc_commands(path.read_text()):
        words = cmd.split()
        where = f"{path.relative_to(ROOT)}:{line}: {cmd[:90]}"
        if words[0] == "python":
            script = words[1]
            if not (ROOT / script).is_file():
                bad.append(f"{where}: no such script {script}")
                continue
            known = benchmark_flags(script)
        else:  # "playworld train lam|tokenizer --x" documents both commands: x must suit each
            specs = resolve(words[1:], where, bad)
            if not specs:
                continue
            known = frozenset.intersection(*(cli_flags(s) for s in specs)) | {"--help"}
        bad += [f"{where}: unknown flag {f}" for f in flags(words) if f not in known]
    return bad


def test_the_extractor_finds_commands_and_flags():
    text = "\n".join([
        "Run `playworld eval vla --policy DIR --suite seen` first.",
        "```bash",
        "playworld train vla --data d \\",
        "    --steps 10 --out o   # a comment --not-a-flag",
        "# playworld train lam --commented-out",
        "python benchmarks/lapa.py [--seeds 0 | --quick]",
        "ls --all",
        "```",
    ])
    cmds = doc_commands(text)
    assert [c for _, c in cmds] == [
        "playworld eval vla --policy DIR --suite seen",
        "playworld train vla --data d --steps 10 --out o",
        "python benchmarks/lapa.py [--seeds 0 | --quick]",
    ]
    assert [n for n, _ in cmds] == [1, 3, 6]
    assert flags(cmds[2][1].split()) == ["--seeds", "--quick"]


def test_a_wrong_flag_in_the_docs_is_caught():
    doc = ROOT / "docs" / "_probe_for_test.md"  # inside ROOT: problems() names files relative to it
    doc.write_text("```bash\nplayworld eval vla --policy p --suite seen --no-such-flag 3\n"
                   "playworld train vlaa --data d\nplayworld train lam|tokenizer --camera wrist --steps 3\npython benchmarks/lapa.py --seeds 0 --nope\n```\n")
    try:
        found = problems(doc)
    finally:
        doc.unlink()
    assert len(found) == 3, found
    assert "unknown flag --no-such-flag" in found[0]
    assert "unknown command word 'vlaa'" in found[1]
    assert found[2].endswith("unknown flag --nope")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_documented_command_and_flag_exists(path):
    found = problems(path)
    assert not found, "the docs name commands or flags the code does not have:\n" + "\n".join(found)
