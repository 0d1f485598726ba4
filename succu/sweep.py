"""`python -m succu.sweep <kind> ...`: analysis sweeps that write tables (CSV, markdown) and plots.

    python -m succu.sweep tt --ckpt runs/succulm/checkpoints/last.ckpt \\
        --layers "0;1;2;3;0,1;1,2;2,3;0,1,2,3" --bond_dims 47,42,39,27,20
    python -m succu.sweep alpha --ckpt runs/abcgpt_char/version_0/checkpoints/last.ckpt --alphas 0:1:0.1

Each kind lives in its own module that exposes `HELP` (one line), `add_arguments(parser)` and
`run(args)`; registering a new kind is one entry in SWEEPS. Every kind also gets `--data_path
NAME=PATH`, `--data_dir` and `--cache_dir`: the paths a checkpoint records are not reused.

Outputs: each kind checks that `--out` is a folder it can create and write before it loads
anything (else one `error:` line naming it, exit 2), removes temporary files that killed writes
left there, and writes every output (CSV, markdown, PNG) atomically: temporary file, fsync,
rename (`succu.io.write_outputs`). Sweeps create no run version folder and no W&B run.
"""

from __future__ import annotations

import argparse
import importlib

from succu.errors import run_cli

# kind -> module implementing it
SWEEPS: dict[str, str] = {
    "tt": "succu.analysis.tt_sweep",
    "alpha": "succu.analysis.alpha_sweep",
}


class NamedPaths(argparse.Action):
    """`NAME=PATH`, repeatable, into {name: [paths]}: a corpus's text, several files in order."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        name, sep, path = str(value).partition("=")
        if not (sep and name and path):
            raise argparse.ArgumentError(self, f"{value!r}: give NAME=PATH, a corpus's name and its "
                                               "text (e.g. mytext=my.txt)")
        paths = {k: list(v) for k, v in (getattr(namespace, self.dest) or {}).items()}
        paths.setdefault(name, []).append(path)
        setattr(namespace, self.dest, paths)


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """Every sweep rebuilds its data from a checkpoint, whose own paths are never reused
    (succu.checkpoint.load_datamodule): the user names them here."""
    parser.add_argument("--data_path", dest="data_paths", action=NamedPaths, default=None, metavar="NAME=PATH",
                        help="the text of corpus NAME: a file or a folder of .txt files (repeat for "
                             "more files, in order, or for other corpora); default: the corpus's file "
                             "in --data_dir (your own text: NAME.txt or a folder NAME). It must be "
                             "the text the checkpoint trained on")
    parser.add_argument("--data_dir", default=None,
                        help="folder with the data files (default: $SUCCU_DATA_DIR, else ./data and "
                             "../shared/data; the succulent world is generated)")
    parser.add_argument("--cache_dir", default=None,
                        help="token cache of text corpora (default: $SUCCU_CACHE_DIR or ~/.cache/succu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m succu.sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(SWEEPS) + "}")
    for kind, module_name in SWEEPS.items():
        module = importlib.import_module(module_name)
        child = sub.add_parser(kind, help=module.HELP, description=module.HELP)
        module.add_arguments(child)
        add_location_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args._run(args))


if __name__ == "__main__":
    main()
