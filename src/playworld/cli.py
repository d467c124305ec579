"""The ``playworld`` command line: one entry point, subcommands generated from dataclasses.

Each command is a dataclass (its docstring and field docstrings become ``--help``) with a
``run()`` method, living next to the code it drives. This file only maps command words to
those classes (imported lazily, so ``playworld --help`` is fast) and turns
:class:`~playworld.errors.PlayworldError` into one clear line and exit code 1.
"""

from __future__ import annotations

import importlib
import logging
import sys

from playworld.errors import PlayworldError

# command words -> "module:Class". Nested groups are dicts.
COMMANDS: dict[str, str | dict[str, str]] = {
    "record": {
        "atari": "playworld.data.atari:RecordAtari",
        "tabletop": "playworld.data.tabletop:RecordTabletop",
    },
    "ingest": "playworld.data.ingest:Ingest",
    "data": {
        "info": "playworld.data.inspect:DataInfo",
        "preview": "playworld.data.inspect:DataPreview",
    },
    "train": {
        "tokenizer": "playworld.train.commands:TrainTokenizer",
        "lam": "playworld.train.commands:TrainLAM",
        "dynamics": "playworld.train.commands:TrainDynamics",
        "world": "playworld.train.commands:TrainWorld",
        "vla": "playworld.policy.train_vla:TrainVLA",
        "latent-policy": "playworld.policy.train_latent:TrainLatentPolicy",
    },
    "world": {
        "assemble": "playworld.world.commands:AssembleWorld",
        "export": "playworld.world.commands:ExportWorld",
    },
    "eval": {
        "world": "playworld.eval.world_eval:EvalWorld",
        "vla": "playworld.eval.vla_eval:EvalVLA",
        "latent-policy": "playworld.eval.latent_policy_eval:EvalLatentPolicy",
    },
    "play": "playworld.serve.commands:Play",
}

SUMMARIES = {
    "record": "record video datasets from real environments (Atari games, the robot tabletop)",
    "ingest": "turn your own video files / image folders into a playworld dataset",
    "data": "inspect a dataset: counts, action histogram, a preview grid of clips",
    "train": "train the Genie world model parts (tokenizer, latent actions, dynamics) or all three",
    "world": "assemble trained parts into a playable world folder, or export a compact copy",
    "eval": "evaluate a trained model and print the paper's metrics",
    "play": "play a generated world in your browser (or headless to a GIF)",
}


def _load(spec: str):
    mod, cls = spec.split(":")
    return getattr(importlib.import_module(mod), cls)



def _usage(prog: str, group: dict, summaries: dict | None = None) -> str:
    lines = [f"usage: {prog} COMMAND [--help]", "", "commands:"]
    for name, spec in group.items():
        if isinstance(spec, dict):
            desc = (summaries or {}).get(name, "")
            lines.append(f"  {name:<12} {desc}  [{'|'.join(spec)}]")
        else:
            doc = (summaries or {}).get(name)
            if doc is None:
                try:
                    doc = ((_load(spec).__doc__ or "").strip().splitlines() or [""])[0]
                except (ImportError, AttributeError) as e:
                    doc = f"(unavailable: {e})"
            lines.append(f"  {name:<12} {doc}")
    lines.append("")
    lines.append(f"Run '{prog} COMMAND --help' for a command's flags.")
    return "\n".join(lines)


def record_command(args, prog: str, argv: list[str]) -> None:
    """Append this invocation (the words, and every option with its value, defaults included) to
    ``<out>/command.json`` after a successful training run, so a trained folder says how it was made
    (a resumed run adds a second entry), and on which machine: retraining is bit-identical with the
    same CPU model and thread count, not across CPU models."""
    import dataclasses
    import json
    from pathlib import Path

    from playworld.utils import append_command_run, machine_info

    out = getattr(args, "out", None)
    if out is None or not Path(out).is_dir():
        return
    options = json.loads(json.dumps(dataclasses.asdict(args), default=str))
    append_command_run(out, {"command": prog, "argv": argv, "options": options, "machine": machine_info()})


def main(argv: list[str] | None = None) -> int:
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    group: dict = COMMANDS
    prog = "playworld"
    summaries: dict | None = SUMMARIES
    while True:
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage(prog, group, summaries))
            return 0 if argv else 2
        if argv[0] == "--version" and prog == "playworld":
            from playworld import __version__

            print(__version__)
            return 0
        word = argv.pop(0)
        if word not in group:
            print(f"{prog}: unknown command '{word}'; valid commands: {', '.join(group)}", file=sys.stderr)
            return 2
        prog = f"{prog} {word}"
        target = group[word]
        if isinstance(target, dict):
            group, summaries = target, None
            continue
        break
    cls = _load(target)
    try:
        args = tyro.cli(cls, args=argv, prog=prog, description=cls.__doc__)
        result = args.run()
        if prog.startswith("playworld train "):
            record_command(args, prog, argv)
    except PlayworldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0



if __name__ == "__main__":
    sys.exit(main())
