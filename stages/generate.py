"""`python -m stages generate lstm_text_generation`: write text with a trained model.

A command of lstm_text_generation's own, not a pipeline step: no stage runs
it, so it lives beside the example (whose `add_commands` adds it to the CLI)
rather than in it. It reads what evaluate reads (the processed corpus and the
model) and continues a seed text at one temperature.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from stages import lstm_text_generation as ltg
from stages.core.errors import InputError, ParamsError
from stages.core.sequences import decode, encode, generate, predictor


def seed_window(seed_text: str, chars: list[str], maxlen: int, lowercase: bool) -> np.ndarray:
    """(maxlen,) indices of the last maxlen characters of the seed, left-padded with spaces."""
    if lowercase:
        seed_text = seed_text.lower()
    missing = sorted({c for c in seed_text if c not in set(chars)})
    if missing:
        raise InputError(
            f"--seed-text has characters the corpus never used: {''.join(missing)!r}; "
            "use only characters of the corpus (see chars.json in data/processed/<run>)."
        )
    pad = " " if " " in chars else chars[0]
    return encode(seed_text[-maxlen:].rjust(maxlen, pad), chars)


def _generate_command(args: argparse.Namespace) -> None:
    from stages.core.run import make_run
    from stages.training import load_trained, seed_everything

    _, run = make_run(args.example, args.variant, "evaluate")  # reads what evaluate reads: processed data and the model
    for path in (run.paths.processed, run.paths.model):
        if not path.exists():
            raise InputError(f"{path} does not exist yet; run `dvc repro train@{run.paths.key}` first.")
    if not (args.temperature > 0 and math.isfinite(args.temperature)):
        raise ParamsError(f"'--temperature' = {args.temperature} is invalid: it must be a finite number > 0.")
    _, chars, meta = ltg.load_processed(run.paths.processed)
    seed_everything(run.seed)
    model, _ = load_trained(run, ltg.build_model)
    window = seed_window(args.seed_text, chars, meta["maxlen"], meta["lowercase"])
    rng = np.random.default_rng(run.seed if args.seed is None else args.seed)
    (out,) = generate(predictor(model), window, args.length, [args.temperature], len(chars), rng)
    sys.stdout.write(args.seed_text + decode(out, chars) + "\n")


def add_generate_command(subparsers: argparse._SubParsersAction) -> None:
    """`python -m stages generate lstm_text_generation --seed-text ... [--temperature T] [--length N]`."""
    p = subparsers.add_parser(
        "generate",
        help="write text with a trained lstm_text_generation model",
        description="Continue --seed-text with the run's trained model (models/lstm_text_generation-<variant>, made by "
        "`dvc repro train@lstm_text_generation-<variant>`): sample --length characters, one at a time, at --temperature "
        "(low: likely characters; high: more surprising ones), and print the seed followed by the continuation.",
    )
    p.add_argument("example", choices=["lstm_text_generation"], metavar="<example>", help="lstm_text_generation")
    p.add_argument("--seed-text", required=True, help="text to continue (its last maxlen characters are used)")
    p.add_argument("--temperature", type=float, default=0.5, help="sampling temperature > 0 (default 0.5)")
    p.add_argument("--length", type=int, default=400, help="characters to generate (default 400)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: params.yaml's seed)")
    p.add_argument("--variant", help="which variant's model (default: the first)")
    p.set_defaults(func=_generate_command)
