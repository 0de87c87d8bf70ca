"""The command line's parsers: every command, its flags and their help (the reference pages are generated from them)."""

from __future__ import annotations

import argparse
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.models.device import DEVICE_HELP, DTYPES


def _columns(text: str) -> dict[str, str]:
    """--columns parsed with the flags, so a bad mapping is refused (one line) before any work."""
    from peftlab.config import parse_mapping

    return parse_mapping(text)


# Flags several commands share, defined once: (argparse options, help).
SHARED_FLAGS: dict[str, dict[str, Any]] = {
    "--model": {"help": "hub id, local model folder or .gguf file (default: the adapter's base, else the embedded SmolLM2-135M-Instruct)"},
    "--columns": {"type": _columns, "help": "map template fields to columns, e.g. prompt=dialogue,response=summary"},
    "--template": {"help": "prompt template with {field} placeholders (with --adapter: the adapter's own is used)"},
    "--dtype": {"choices": list(DTYPES), "help": "weights dtype (auto: bf16 where the device computes it natively, "
                "fp16 on GPUs without bf16, else fp32)"},
    "--device": {"help": DEVICE_HELP},
    "--set": {"action": "append", "default": [], "metavar": "KEY=VALUE",
              "help": "override any setting, e.g. --set train.lr=1e-4 --set lora.r=8 (repeatable)"},
    "--max-samples": {"type": int, "help": "use at most N rows"},
    "--batch-size": {"type": int, "help": "training batch size"},
    "--seed": {"type": int, "help": "seed of every RNG and of the data order (train.seed, default 42)"},
    "--overwrite": {"action": "store_true", "help": "replace what an earlier run of this command wrote in --output"},
    "--push-to-hub": {"metavar": "OWNER/NAME", "help": "upload the result to this Hugging Face repository (private; token from HF_TOKEN "
                      "or `hf auth login`), checked reachable before any work starts"},
    "--public": {"action": "store_true", "help": "with --push-to-hub: make a new repository public"},
}

# Flags that set a config key: the same key for every command that has the flag. --data and
# --output name the training data and the run folder only for the commands that train; the others skip them.
FLAG_KEYS = {
    "model": "model.name", "dtype": "model.dtype", "device": "model.device", "method": "method", "output": "output", "data": "data.train",
    "eval_data": "data.eval", "template": "data.template", "max_samples": "data.max_samples", "every": "data.every",
    "max_steps": "train.max_steps", "budget_steps": "train.max_steps", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed",
}
NOT_TRAINING = ("data", "output")


def _shared(parser: argparse.ArgumentParser, *flags: str, **changes: Any) -> None:
    for flag in flags:
        parser.add_argument(flag, **{**SHARED_FLAGS[flag], **changes.get(flag.lstrip("-").replace("-", "_"), {})})


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    _shared(parser, "--model", "--columns", "--template", "--dtype", "--device", "--set", "--max-samples", "--batch-size", "--seed")
    parser.add_argument("--data", help="training data: .jsonl, .csv, .parquet or hub:NAME[:SPLIT]")
    parser.add_argument("--eval-data", help="evaluation data, same formats")
    parser.add_argument("--method", help="training method (default lora; see `peftlab methods`)")
    parser.add_argument("--output", help="output folder")
    parser.add_argument("--config", help="run config YAML; flags and --set override it")
    parser.add_argument("--target", help="modules the method adapts: qv, all-linear or names, e.g. q_proj,v_proj")
    parser.add_argument("--every", type=int, help="use every K-th row")
    parser.add_argument("--epochs", type=float, help="passes over the training rows (default 1; fractions allowed)")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides --epochs)")
    parser.add_argument("--lr", type=float, help="learning rate")


def _add_generation_options(parser: argparse.ArgumentParser, batch_flag: str = "--batch-size") -> None:
    parser.add_argument("--max-new-tokens", type=int, help="longest generated summary in tokens (default 128)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    parser.add_argument(batch_flag, dest="gen_batch_size", type=int, default=16, help="prompts generated at once (default 16)")
    parser.add_argument("--samples", type=int, default=3, help="samples to print side by side (default 3)")


def _names(text: str) -> list[str]:
    """'rouge,exact' -> ['rouge', 'exact']: with action="extend" each repeated flag adds its names, in order."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_metric_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    group.add_argument("--metric", action="extend", type=_names, metavar="NAME[,NAME]",
                       help="what to score by, the first one being the one compare selects and reports by: rouge (default), "
                       "exact, accuracy, f1, chrf, bleu, json, judge, judge-pairwise, python:MODULE:FUNCTION (repeatable)")
    group.add_argument("--judge-url", help="judge metrics: the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 "
                       "(key from $PEFTLAB_JUDGE_KEY, else $OPENAI_API_KEY)")
    group.add_argument("--judge-model", help="judge metrics: the model name the endpoint serves")
    group.add_argument("--judge-prompt", help="judge metrics: a prompt file replacing the default of the chosen mode")


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    _shared(parser, "--model", "--columns", "--template", "--dtype", "--device", "--set", "--max-samples")
    parser.add_argument("--adapter", help="adapter folder from `peftlab train` (DIR/adapter or DIR); prompt and columns come from its run")
    parser.add_argument("--data", required=True, help="test data: .jsonl, .csv, .parquet or hub:NAME[:SPLIT]")
    parser.add_argument("--output", help="folder for predictions.jsonl and metrics.json")
    _shared(parser, "--overwrite")
    parser.add_argument("--every", type=int, default=1, help="use every K-th row")
    parser.add_argument("--skip-base", action="store_true", help="with --adapter: do not also evaluate the base model")
    _add_generation_options(parser)
    _add_metric_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftlab", description="Parameter-efficient fine-tuning, evaluated and compared.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune a model on your data")
    _add_run_options(train)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    _shared(train, "--overwrite", "--push-to-hub", "--public")

    evaluate = commands.add_parser("eval", help="generate for a test set in batches and score it (ROUGE or --metric; base and tuned)")
    _add_eval_options(evaluate)

    demo = commands.add_parser("demo", help="the whole workflow: evaluate the base model, train LoRA, evaluate the tuned one, write an HTML page")
    _add_run_options(demo)
    demo.add_argument("--test-data", help="test data (default: the demo set's; with --data, the last 10%% of its rows)")
    _shared(demo, "--overwrite")
    _add_generation_options(demo, batch_flag="--gen-batch-size")
    _add_metric_options(demo)

    compare = commands.add_parser("compare", help="base, full fine-tuning and PEFT methods side by side: quality, cost, forgetting, HTML report")
    _add_compare_options(compare)

    methods = commands.add_parser("methods", help="list the training methods and their defaults")
    methods.add_argument("--model", help="also show the trainable share on this model")
    _add_use_commands(commands)
    return parser


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    from peftlab.config import SELECT_BY

    _shared(parser, "--model", "--columns", "--template", "--dtype", "--device", "--set", "--max-samples", "--batch-size", "--seed", "--overwrite",
            max_samples={"help": "training rows per run"}, set={"help": "a setting for every run, e.g. train.lr=5e-4"})
    parser.add_argument("--data", required=True, help="training data, shared by every run")
    parser.add_argument("--eval-data", dest="test_data", required=True, help="test data with reference column(s), shared by every run")
    parser.add_argument("--methods", default="base,lora", help="comma-separated, e.g. base,full,lora,dora,ia3,prompt-tuning,qlora")
    parser.add_argument("--output", required=True, help="comparison folder (rerun the same command to resume or add methods)")
    parser.add_argument("--budget-steps", type=int, help="optimizer steps per run (the same token budget for every method)")
    parser.add_argument("--epochs", type=float, help="epochs per run, instead of --budget-steps")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2", help="vary a setting, e.g. lora.r=8,32 or lora.target=qv,all-linear (repeatable)")
    parser.add_argument("--eval-samples", type=int, help="test rows to score (default: all)")
    parser.add_argument("--launcher-config", help="run each training under `accelerate launch --config_file FILE`")
    tuning = parser.add_argument_group("tuning (each method at its best, with confidence)")
    tuning.add_argument("--trials", type=int, default=0, help="tune each method's learning rate and capacity with N Optuna trials "
                        "on validation rows before scoring (default 0: one run per method at its defaults)")
    tuning.add_argument("--seeds", type=int, default=1, help="train each method's chosen configuration with K seeds (with --trials)")
    tuning.add_argument("--val-share", type=float, default=0.1, help="share of the training rows kept for validation (default 0.1, at least 16 rows)")
    tuning.add_argument("--select-by", choices=SELECT_BY, default="loss",
                        help="what chooses each method's configuration on the validation rows: its final loss (default), or the "
                        "primary --metric of answers generated for them (`metric`; `rouge` is its older name; slower; better "
                        "for soft prompts, whose loss can mislead)")
    tuning.add_argument("--storage", help="Optuna storage URL shared by every worker (default: studies.db in the output folder)")
    tuning.add_argument("--study", help="study name shared by every worker (default: the output folder's name)")
    tuning.add_argument("--worker", action="store_true", help="only work on the shared studies (same options and --storage); "
                        "the command without --worker writes the report")
    tuning.add_argument("--stale-after", type=int, default=120, metavar="SECONDS",
                        help="a trial whose worker has been silent this long is taken over by another (default 120)")
    _add_generation_options(parser, batch_flag="--gen-batch-size")
    _add_metric_options(parser)
    parser.add_argument("--general-tasks", action="store_true", help="also score every run on general multiple-choice items "
                        "(log-likelihood accuracy, as lm-evaluation-harness does) and report its change against the base")


def _add_use_commands(commands: Any) -> None:
    """generate, merge, export, serve: using a trained adapter."""
    generate = commands.add_parser("generate", help="generate for one prompt or a file of rows (base or base + adapter)")
    generate.add_argument("prompt", nargs="?", help="the prompt (with --adapter: filled into its template's {prompt})")
    _shared(generate, "--model", "--columns", "--template", "--dtype", "--device", "--set", "--max-samples",
            template={"help": "prompt template (without --adapter; default: the prompt as written)"})
    generate.add_argument("--adapter", help="adapter folder from `peftlab train` (DIR/adapter or DIR)")
    generate.add_argument("--data", help="rows to generate for: .jsonl, .csv, .parquet or hub:NAME[:SPLIT]")
    generate.add_argument("--output", help="write JSONL here (default: print)")
    _shared(generate, "--overwrite", overwrite={"help": "replace the answers file an earlier `peftlab generate` wrote at --output"})
    generate.add_argument("--max-new-tokens", type=int, help="longest answer in tokens (default 128)")
    generate.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    generate.add_argument("--batch-size", dest="gen_batch_size", type=int, default=16, help="prompts generated at once (default 16)")

    merge = commands.add_parser("merge", help="merge an adapter into its base and save a plain transformers model")
    _shared(merge, "--model", "--device", "--overwrite", "--push-to-hub", "--public")
    merge.add_argument("--adapter", required=True, help="adapter folder from `peftlab train`")
    merge.add_argument("--output", required=True, help="folder for the merged model")
    merge.add_argument("--dtype", choices=list(DTYPES), help="dtype to merge and save in (default: the training run's)")

    from peftlab.export.formats import DEFAULT_FORMAT, format_choices, formats_help, tensor_type_choices, types_help

    export = commands.add_parser("export", help="an adapter (merged) or a merged model as one GGUF file for llama.cpp and Ollama")
    _shared(export, "--model", "--device", "--overwrite", "--push-to-hub", "--public")
    export.add_argument("source", nargs="+", help="adapter folder from `peftlab train`, or a folder from `peftlab merge`; "
                        "vllm: one or more adapters, as DIR or NAME=DIR")
    export.add_argument("--format", default=DEFAULT_FORMAT, choices=format_choices(), help=formats_help())
    export.add_argument("--type", dest="tensor_type", choices=tensor_type_choices(), help=types_help())
    export.add_argument("--output", required=True, help="the .gguf file to write (ollama, lora, vllm: the folder)")
    export.add_argument("--rank", default="32", help="lora (and vllm, for adapters converted to LoRA): the LoRA rank (e.g. 32), or an energy share in (0, 1] kept per layer "
                        "(e.g. 0.95: the smallest rank holding 95%% of each update's squared singular values); default 32")

    check = commands.add_parser("check", help="parity: the adapter on its base, the merged model, its LoRA conversion, GGUF files in "
                                "llama.cpp and a running server answer alike")
    _shared(check, "--model", "--device", "--max-samples", max_samples={"help": "prompts to compare (default 24)"})
    check.add_argument("adapter", help="adapter folder from `peftlab train`: the reference every other runtime is compared with")
    check.add_argument("--data", required=True, help="rows whose prompts are compared, built with the adapter's template")
    check.add_argument("--gguf", help="also run this exported GGUF file in llama.cpp (needs llama-cpp-python)")
    check.add_argument("--lora", metavar="DIR", help="also run this LoRA adapter folder on the base, e.g. the adapter converted by "
                       "`peftlab export ADAPTER --format lora`")
    check.add_argument("--gguf-lora", metavar="FILE", help="also run this llama.cpp LoRA file (`peftlab export --format gguf-lora`) "
                       "on --base-gguf in llama.cpp (needs llama-cpp-python)")
    check.add_argument("--base-gguf", metavar="FILE", help="with --gguf-lora: the base's GGUF file (default: the file the base came "
                       "from, as the embedded default did)")
    check.add_argument("--server", metavar="URL", help="also ask this running OpenAI-compatible server (peftlab serve, vLLM, "
                       "llama.cpp's server), e.g. http://127.0.0.1:8000; its key from $PEFTLAB_API_KEY")
    check.add_argument("--server-model", metavar="NAME", help="the name the server serves this adapter under "
                       "(default: the one adapter it lists)")
    check.add_argument("--max-new-tokens", type=int, default=48, help="longest answer compared, in tokens (default 48)")
    check.add_argument("--min-agreement", type=float, default=0.9,
                       help="share of identical answers each runtime needs to pass (default 0.9); exit 1 below it")

    serve = commands.add_parser("serve", help="OpenAI-compatible HTTP server: the base and named adapters, chosen per request")
    serve.add_argument("--model", help="base model (default: the first adapter's base, else the embedded SmolLM2-135M-Instruct)")
    serve.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", help="serve an adapter as model NAME (repeatable)")
    serve.add_argument("--name", help="the base model's name in requests (default: --model, or SmolLM2-135M-Instruct)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
    serve.add_argument("--api-key-file", metavar="PATH", help="require 'Authorization: Bearer KEY', KEY read from this file "
                       "(default: $PEFTLAB_API_KEY)")
    serve.add_argument("--api-key", nargs="?", const="", dest="refused_api_key", help=argparse.SUPPRESS)  # refused: argv is public
    serve.add_argument("--dtype", choices=list(DTYPES), default="auto", help="weights dtype (fp32: answers never depend on batching)")
    _shared(serve, "--device")
    serve.add_argument("--max-batch-size", type=int, default=32, help="rows decoding at once, all adapters together (default 32)")
    serve.add_argument("--prefill-chunk-tokens", type=int, default=256,
                       help="prompt tokens prefilled between two decoding steps while others stream (default %(default)s)")
    serve.add_argument("--adapter-dir", metavar="DIR", help="load an adapter on demand when a request names a folder in DIR")
    serve.add_argument("--max-adapters", type=int, help="adapters loaded while serving (on demand or by the load route) held at "
                       "once; the --adapter ones are pinned and not counted")
    _add_serve_limits(serve)


# `peftlab serve` flags that set a serving limit: flag -> (Limits field, help); the default and type are the field's
SERVE_LIMITS = {
    "--max-body-bytes": ("max_body_bytes", "largest request body; larger ones get 413"),
    "--max-header-bytes": ("max_header_bytes", "largest request line + headers"),
    "--max-tokens": ("max_tokens", "the most tokens one completion may ask for"),
    "--max-prompts": ("max_prompts", "prompts in one /v1/completions request"),
    "--max-messages": ("max_messages", "messages in one chat request"),
    "--max-stop-strings": ("max_stop_strings", "stop strings in one request"),
    "--max-stop-chars": ("max_stop_chars", "characters in one stop string"),
    "--max-waiting": ("max_waiting", "prompts queued for the model; more get 429"),
    "--max-connections": ("max_connections", "open connections, idle ones included; requests beyond get 503"),
    "--idle-timeout": ("idle_timeout_seconds", "seconds a connection may stay open without sending a request"),
    "--body-timeout": ("body_timeout_seconds", "seconds a request body may take to arrive"),
}


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    from peftlab.serve.limits import Limits

    defaults = Limits()
    for flag, (field, help_text) in SERVE_LIMITS.items():
        default = getattr(defaults, field)
        serve.add_argument(flag, dest=field, type=type(default), default=default, help=f"{help_text} (default {default})")


def serve_limits(args: argparse.Namespace) -> Any:
    from peftlab.serve.limits import Limits

    limits = Limits(**{field: getattr(args, field) for field, _ in SERVE_LIMITS.values()})
    for flag, (field, _) in SERVE_LIMITS.items():
        if not getattr(limits, field) > 0:
            raise PeftlabError(f"{flag} must be more than 0, got {getattr(limits, field)}")
    if limits.max_prompts > limits.max_waiting:
        raise PeftlabError(f"--max-prompts {limits.max_prompts} exceeds --max-waiting {limits.max_waiting}: such a request could "
                           "never be queued; lower --max-prompts or raise --max-waiting")
    return limits

