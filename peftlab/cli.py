"""The `peftlab` command: parse, load the config, call a recipe, print. The only module that knows the terminal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from peftlab.errors import PeftlabError


def _say(text: str) -> None:
    print(text, flush=True)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="hub id, local model folder or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data", help="training data: .jsonl, .csv, .parquet or hub:NAME[:SPLIT]")
    parser.add_argument("--eval-data", help="evaluation data, same formats")
    parser.add_argument("--method", help="training method (default lora; see `peftlab methods`)")
    parser.add_argument("--output", help="output folder")
    parser.add_argument("--config", help="run config YAML; flags and --set override it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. --set train.lr=1e-4 --set lora.r=8 (repeatable)")
    parser.add_argument("--columns", help="map template fields to columns, e.g. prompt=dialogue,response=summary")
    parser.add_argument("--template", help="prompt template with {field} placeholders")
    parser.add_argument("--dtype", choices=["auto", "fp32", "bf16"], help="weights dtype (auto: bf16 where fast)")
    parser.add_argument("--target", help="modules the method adapts: qv, all-linear or names, e.g. q_proj,v_proj")
    parser.add_argument("--max-samples", type=int, help="use at most N rows")
    parser.add_argument("--every", type=int, help="use every K-th row")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--seed", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftlab", description="Parameter-efficient fine-tuning, evaluated and compared.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune a model on your data")
    _add_run_options(train)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    train.add_argument("--overwrite", action="store_true", help="replace a different run in --output")

    methods = commands.add_parser("methods", help="list the training methods and their defaults")
    methods.add_argument("--model", help="also show the trainable share on this model")
    return parser


def run_config(args: argparse.Namespace) -> Any:
    from peftlab import config as cfg

    flags = {
        "model.name": args.model, "model.dtype": args.dtype, "method": args.method, "output": args.output,
        "data.train": args.data, "data.eval": args.eval_data, "data.template": args.template,
        "data.max_samples": args.max_samples, "data.every": args.every,
        "train.epochs": args.epochs, "train.max_steps": args.max_steps, "train.batch_size": args.batch_size,
        "train.lr": args.lr, "train.seed": args.seed,
    }
    overrides = list(args.set)
    if args.columns:
        overrides += [f"data.columns.{name}={column}" for name, column in cfg.parse_mapping(args.columns).items()]
    config = cfg.load(args.config, overrides, flags)
    if args.target:  # belongs to whichever method the config ended up with
        config = cfg.load(args.config, [*overrides, f"{config.method}.target={args.target}"], flags)
    return config


def command_train(args: argparse.Namespace) -> int:
    from peftlab.train.recipe import run

    config = run_config(args)
    summary = run(config, resume=args.resume, overwrite=args.overwrite, say=_say)
    _say(
        f"done in {summary['train_seconds']:.1f} s: {summary['real_tokens_per_second']:.0f} real tokens/s, "
        f"{100 * summary['real_token_share']:.1f}% of batch tokens real, peak memory {summary['peak_memory_bytes'] / 2**30:.2f} GiB"
    )
    losses = f"final train loss {summary['train_loss']:.4f}"
    if summary["eval_loss"] is not None:
        losses += f", eval loss {summary['eval_loss']:.4f}"
    _say(f"{losses}; adapter: {os.path.join(config.output, 'adapter')}")
    return 0


def command_methods(args: argparse.Namespace) -> int:
    from peftlab.methods import get_method, method_names

    for name in method_names():
        method = get_method(name)
        defaults = ", ".join(f"{k}={v}" for k, v in method.defaults().items())
        _say(f"{name:<14} {method.description}\n{'':<14} defaults: {defaults or '-'}")
    return 0


COMMANDS = {"train": command_train, "methods": command_methods}


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore")
    import transformers

    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.debug:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except PeftlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; outputs written so far are complete (rerun train with --resume to continue)", file=sys.stderr)
        return 130
    except Exception as error:  # anything unexpected: one line unless --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
