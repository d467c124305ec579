"""Pool `playworld eval vla` results per model and compare them with a baseline.

Each model is a VLA folder; every ``vla_eval.json`` under it (``eval*/``, e.g. one folder per
suite and layout seed) is read, and the successes of each suite are summed over them. Prints a
markdown table: per suite successes / episodes with the 95% Wilson interval, the unseen average
(unseen-objects + unseen-instructions, pooled), and each model's unseen-average difference from
the first model with its 95% Newcombe interval. ``--by-reference`` adds a second table:
unseen-instructions split by how the instruction names the object, by a spatial reference ("the
leftmost block") or by colour/shape synonyms ("the crimson block"), from the per-episode results.
``--outcomes`` adds a table of how the episodes ended (success, the gripper closed on another
object, on no object, on the named object without lifting it, never closed), pooled over the
shown suites: where a model fails, not only how often.

    python benchmarks/vla_compare.py runs/vla-pick runs/vla-pick-slots --suites seen unseen-objects unseen-instructions

A model given as ``DIR1+DIR2+...`` is one row pooled over those folders (e.g. the training seeds
of one recipe).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from playworld.envs.tabletop.tasks import SPATIAL_REFERENCES
from playworld.eval.metrics import confidence_interval_95, newcombe_interval
from playworld.eval.vla_eval import OUTCOMES

UNSEEN = ("unseen-objects", "unseen-instructions")
#: The unseen-instructions suite's spatial references ("the cube closest to you"), from its own
#: phrases with any one-word noun.
SPATIAL_PATTERNS = tuple(
    re.compile(r"\b" + re.escape(phrase).replace(re.escape("{n}"), r"\w+") + r"\b") for phrase, _ in SPATIAL_REFERENCES
)


def _folders(model: Path) -> list[Path]:
    """The folders of a row: ``DIR1+DIR2`` is both."""
    return [Path(p) for p in str(model).split("+")]


def label(model: Path, others: list[Path] = ()) -> str:
    """A row's name: the folder's name, or ``a+b`` for a pooled row; with as many parent folders
    as it takes to tell it from the ``others`` rows (``seed0/lapa`` vs ``seed1/lapa``)."""
    for depth in range(1, max(len(Path(p).parts) for p in [model, *others]) + 1):
        def name(m: Path, depth: int = depth) -> str:
            parts = ["/".join(folder.parts[-depth:]) for folder in _folders(m)]
            if len(parts) > 1 and len(set(parts)) == 1:  # seed0/lapa+seed1/lapa+seed2/lapa
                return f"{parts[0]} x{len(parts)} pooled"
            return "+".join(parts)
        if all(name(o) != name(model) for o in others if o != model):
            return name(model)
    return str(model)


def load(model: Path, patterns: list[str]) -> list[dict]:
    """The "suites" of every evaluation file under the row's folders, each file read once."""
    files = sorted({f for folder in _folders(model) for pattern in patterns for f in folder.glob(pattern)})
    out = []
    for f in files:
        suites = json.loads(f.read_text())["suites"]
        for name in [n for n, m in suites.items() if m.get("training_episodes")]:
            print(f"left out {f} ({name}): {suites[name]['training_episodes']} of its episodes were trained on",
                  file=sys.stderr)
            del suites[name]
        out.append(suites)
    return out


def pool(reports: list[dict]) -> dict[str, tuple[int, int]]:
    """suite -> (successes, episodes), summed over the evaluation reports of :func:`load`."""
    out: dict[str, tuple[int, int]] = {}
    for suites in reports:
        for suite, m in suites.items():
            s, n = out.get(suite, (0, 0))
            out[suite] = (s + int(m["successes"]), n + int(m["episodes"]))
    return out


def by_reference(reports: list[dict], suite: str = "unseen-instructions") -> dict[str, tuple[int, int]]:
    """"spatial" / "synonyms" -> (successes, episodes) of ``suite``'s episodes, from the reports'
    per-episode results (reports written before those existed are skipped)."""
    out = {"spatial": (0, 0), "synonyms": (0, 0)}
    for suites in reports:
        for row in suites.get(suite, {}).get("per_episode", []):
            key = "spatial" if any(p.search(row["instruction"].lower()) for p in SPATIAL_PATTERNS) else "synonyms"
            s, n = out[key]
            out[key] = (s + bool(row["success"]), n + 1)
    return out


def outcomes(reports: list[dict], suites: list[str]) -> dict[str, int]:
    """outcome -> episodes, summed over ``suites`` of the reports (from each suite's ``outcomes``
    counts; reports written before those existed are skipped)."""
    out = dict.fromkeys(OUTCOMES, 0)
    for report in reports:
        for suite in suites:
            for outcome, k in report.get(suite, {}).get("outcomes", {}).items():
                out[outcome] = out.get(outcome, 0) + int(k)
    return out


def cell(s: int, n: int) -> str:
    if not n:
        return "-"
    lo, hi = confidence_interval_95(s, n)
    return f"{s}/{n} = {100 * s / n:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", type=Path, nargs="+", help="VLA folders (DIR1+DIR2: one row pooled over both); the first is the baseline")
    p.add_argument("--suites", nargs="+", default=["seen", *UNSEEN], help="suites to show")
    p.add_argument("--pattern", nargs="+", default=["eval-*/vla_eval.json", "eval[0-9]*-*/vla_eval.json"],
                   help="evaluation files under each model folder (globs; default: eval-SUITE and evalN-SUITE folders, "
                        "N = another layout seed)")
    p.add_argument("--by-reference", action="store_true",
                   help="also split unseen-instructions by spatial references vs synonyms (per-episode results)")
    p.add_argument("--outcomes", action="store_true",
                   help="also count how the episodes ended (closed on another object, on no object, never closed, ...), "
                        "pooled over the shown suites")
    args = p.parse_args(argv)
    reports = {m: load(m, args.pattern) for m in args.models}
    pooled = {m: pool(reports[m]) for m in args.models}
    for m, suites in pooled.items():
        if not suites:
            raise SystemExit(f"no evaluation files {' '.join(args.pattern)} under {m}; run playworld eval vla --out {m}/eval-SUITE first.")
    unseen = {m: tuple(map(sum, zip(*(r.get(s, (0, 0)) for s in UNSEEN), strict=True))) for m, r in pooled.items()}
    base = args.models[0]
    names = {m: label(m, args.models) for m in args.models}
    lines = [
        "| model | " + " | ".join(args.suites) + " | unseen average | vs " + names[base] + " |",
        "| --- " * (len(args.suites) + 3) + "|",
    ]
    result = {}
    for m in args.models:
        s, n = unseen[m]
        diff = "-"
        if m != base and n and unseen[base][1]:
            lo, hi = newcombe_interval(s, n, *unseen[base])
            d = s / n - unseen[base][0] / unseen[base][1]
            diff = f"{100 * d:+.0f} [{100 * lo:+.0f}, {100 * hi:+.0f}]"
        row = [cell(*pooled[m].get(suite, (0, 0))) for suite in args.suites]
        lines.append(f"| `{names[m]}` | " + " | ".join(row) + f" | {cell(s, n)} | {diff} |")
        result[str(m)] = {"suites": pooled[m], "unseen": unseen[m]}
    print("\n".join(lines))
    if args.by_reference:
        lines = ["", "| model | unseen-instructions, spatial reference | unseen-instructions, synonyms |", "| --- | --- | --- |"]
        for m in args.models:
            split = by_reference(reports[m])
            result[str(m)]["by_reference"] = split
            lines.append(f"| `{names[m]}` | {cell(*split['spatial'])} | {cell(*split['synonyms'])} |")
        print("\n".join(lines))
    if args.outcomes:
        counts = {m: outcomes(reports[m], args.suites) for m in args.models}
        columns = [o for o in OUTCOMES if any(c.get(o) for c in counts.values())]
        columns += sorted({o for c in counts.values() for o, k in c.items() if k and o not in columns})
        lines = ["", f"How the episodes ended ({', '.join(args.suites)} pooled):", "",
                 "| model | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
        for m in args.models:
            n, c = sum(counts[m].values()), counts[m]
            result[str(m)]["outcomes"] = c
            lines.append(f"| `{names[m]}` | " + " | ".join(
                f"{c.get(o, 0)}/{n} = {100 * c.get(o, 0) / n:.0f}%" if n else "-" for o in columns) + " |")
        print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
