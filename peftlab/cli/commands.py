"""Each command: flags to a run config, the recipe called, its result printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from peftlab.cli.options import FLAG_KEYS, NOT_TRAINING, serve_limits
from peftlab.errors import PeftlabError


def _say(text: str) -> None:
    print(text, flush=True)


def metric_names(args: argparse.Namespace) -> list[str]:
    """The names --metric gave (the parser split them on commas), first the primary one; without it the default."""
    from peftlab.evaluate.metrics import DEFAULT_METRICS

    return args.metric or list(DEFAULT_METRICS)


def metric_options(args: argparse.Namespace) -> list[Any]:
    """The metrics named by --metric, resolved (a user function imported, a judge configured) before anything slow."""
    from peftlab.evaluate.metrics import JudgeSettings, resolve_metrics

    judge = JudgeSettings(args.judge_url, args.judge_model, args.judge_prompt)
    return resolve_metrics(metric_names(args), judge)


def metric_tables(result: dict[str, Any]) -> str:
    """The scores table by the recorded metrics, then the confusion table of each model scored for accuracy."""
    from peftlab.evaluate.metrics import described_keys
    from peftlab.report.tables import confusion_table, loss_table, scores_table

    if result.get("primary") == "loss":  # text rows: held-out loss and perplexity, nothing generated
        return loss_table(result["results"])
    text = scores_table(result["results"], described_keys(result["metrics"]))
    for name, row in result["results"].items():
        if "confusion" in row:
            text += f"\n\nconfusion of {name} (rows: true label, columns: predicted)\n" + confusion_table(row["confusion"])
    return text


def config_flags(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config keys this command's flags set (None: not given), through FLAG_KEYS."""
    return {key: getattr(args, dest) for dest, key in FLAG_KEYS.items() if hasattr(args, dest) and dest not in skip}


def overrides(args: argparse.Namespace) -> list[str]:
    """--set assignments, then --columns (parsed by the parser) as data.columns.FIELD=COLUMN assignments."""
    columns = getattr(args, "columns", None) or {}
    return [*args.set, *(f"data.columns.{name}={column}" for name, column in columns.items())]


def run_config(args: argparse.Namespace) -> Any:
    from peftlab import config as cfg

    flags = config_flags(args)
    config = cfg.load(args.config, overrides(args), flags)
    if args.target:  # belongs to whichever method the config ended up with
        config = cfg.load(args.config, [*overrides(args), f"{config.method}.target={args.target}"], flags)
    return config


def _hub(args: argparse.Namespace) -> Any:
    """The Hub client when --push-to-hub is given, checked before the command's work starts."""
    if not args.push_to_hub:
        if args.public:
            raise PeftlabError("--public works with --push-to-hub OWNER/NAME; add it or drop --public")
        return None
    from peftlab.export.hub import check_push

    return check_push(args.push_to_hub)


def _push(args: argparse.Namespace, api: Any, path: Any) -> None:
    if api is not None:
        from pathlib import Path

        from peftlab.export.hub import push

        push(api, args.push_to_hub, Path(path), args.public, _say)


def command_train(args: argparse.Namespace) -> int:
    from peftlab.train.recipe import run

    config = run_config(args)
    api = _hub(args)
    run(config, resume=args.resume, overwrite=args.overwrite, say=_say, config_file=args.config)
    _push(args, api, f"{config.output}/adapter")
    return 0


def generation_settings(args: argparse.Namespace, default_max_new_tokens: int = 128) -> Any:
    from peftlab.generation import GenerationSettings

    settings = GenerationSettings(args.max_new_tokens or default_max_new_tokens, args.num_beams, args.gen_batch_size)
    settings.check()
    return settings


def command_eval(args: argparse.Namespace) -> int:
    from peftlab.evaluate.evaluation import evaluate
    from peftlab.evaluate.settings import eval_config
    from peftlab.report.tables import samples_text

    config = eval_config(args.adapter, overrides(args), config_flags(args, NOT_TRAINING), args.max_samples, args.every)
    metrics = metric_options(args) if args.metric else None  # None: the default, or held-out loss on text rows
    result = evaluate(config, args.data, args.output, args.adapter, generation_settings(args), not args.skip_base, say=_say,
                      overwrite=args.overwrite, metrics=metrics)
    _say("\n" + metric_tables(result))
    if args.samples and result.get("primary") != "loss":
        _say("\n" + samples_text(result["records"], args.samples))
    if args.output:
        _say(f"\npredictions and metrics: {args.output}")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from peftlab.demo import run_demo
    from peftlab.report.tables import samples_text

    if args.data is None and args.epochs is None and args.max_steps is None and args.config is None:
        # The demo set's terse one-line summaries are learned in a few steps of 8 rows at LoRA's rate 3e-3: measured
        # on a 2-core AVX2 CPU, 12 steps gave ROUGE-L 22.4 -> 69.3 in 184 s in all, over the 3-minute aim; 10 steps
        # keep the gain (benchmarks/results/demo.json) in less time. 48 steps at 1e-3 took four times as long.
        args.max_steps = 10
        if (args.method or "lora") == "lora" and args.lr is None:
            args.lr = 3e-3
    args.output = args.output or "runs/demo"
    # the demo's summaries are one line (at most 20 tokens); 32 leaves room and bounds the base model's long answers
    result = run_demo(run_config(args), args.test_data, generation_settings(args, default_max_new_tokens=32), args.overwrite, say=_say,
                      config_file=args.config, metrics=metric_options(args))
    _say("\n" + metric_tables(result))
    if args.samples:
        _say("\n" + samples_text(result["records"], args.samples))
    _say(f"\npage: {result['page']}")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from peftlab import config as cfg
    from peftlab.compare.comparison import run_compare
    from peftlab.config import CompareSetup

    flags = config_flags(args, skip=("output",))
    settings = generation_settings(args, default_max_new_tokens=64)
    setup = CompareSetup([cfg.flag_assignment(key, value) for key, value in flags.items() if value is not None] + overrides(args),
                         args.test_data, args.eval_samples, {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams},
                         trials=args.trials, seeds=args.seeds, val_share=args.val_share,
                         select_by=args.select_by, metrics=metric_names(args), general_tasks=args.general_tasks,
                         judge={k: v for k, v in (("url", args.judge_url), ("model", args.judge_model),
                                                  ("prompt_file", args.judge_prompt)) if v})
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    tuning_only = [flag for flag, value in (("--seeds", args.seeds != 1), ("--storage", args.storage), ("--study", args.study),
                                            ("--worker", args.worker), ("--val-share", args.val_share != 0.1),
                                            ("--select-by", args.select_by != "loss")) if value]
    if args.trials == 0 and tuning_only:
        raise PeftlabError(f"{', '.join(tuning_only)} work with --trials N (tuned comparisons); add --trials, e.g. --trials 4")
    if args.trials and args.sweep:
        raise PeftlabError("--sweep and --trials do not mix: --trials searches each method's settings itself; drop one")
    if args.trials:
        from peftlab.compare.tuned import Sharing, run_tuned_compare

        sharing = Sharing(args.storage, args.study, args.worker, args.stale_after)
        run_tuned_compare(setup, methods, args.output, settings, sharing, args.launcher_config, args.overwrite, say=_say)
        return 0
    run_compare(setup, methods, args.sweep, args.output, settings, args.launcher_config, args.overwrite, say=_say)
    return 0


def command_methods(args: argparse.Namespace) -> int:
    from peftlab.methods import capabilities, get_method, method_names

    shares = {}
    if args.model:
        from peftlab.methods.shares import trainable_shares

        roles, listed = trainable_shares(args.model)
        shares = {share.method: share for share in listed}
        _say(f"{args.model}: {roles}")
    for name in method_names():
        method = get_method(name)
        defaults = ", ".join(f"{k}={v}" for k, v in method.defaults().items())
        _say(f"{name:<14} {method.description}\n{'':<14} defaults: {defaults or '-'}")
        _say(f"{'':<14} can: {', '.join(capabilities(method)) or '-'}")
        share = shares.get(name)
        if share and share.problem:
            _say(f"{'':<14} on {args.model}: cannot apply with defaults: {share.problem}")
        elif share:
            _say(f"{'':<14} on {args.model}: {share.trainable:,} of {share.total:,} parameters trainable ({share.percent:.4f}%)")
    return 0


def command_generate(args: argparse.Namespace) -> int:
    from peftlab.evaluate.generate import run_generate
    from peftlab.evaluate.settings import generate_config

    config = generate_config(args.adapter, overrides(args), config_flags(args, NOT_TRAINING), args.max_samples,
                             reads_rows=args.data is not None)
    records = run_generate(config, args.adapter, args.prompt, args.data, args.output, generation_settings(args),
                           say=lambda text: print(text, file=sys.stderr, flush=True), overwrite=args.overwrite)
    if args.output:
        _say(f"{len(records)} answers written to {args.output}")
    elif args.prompt is not None:
        _say(records[0]["output"])
    else:
        for record in records:
            _say(json.dumps(record, ensure_ascii=False))
    return 0


def command_merge(args: argparse.Namespace) -> int:
    from peftlab.export.merge import merge

    api = _hub(args)
    merge(args.adapter, args.output, args.model, args.dtype, args.overwrite, say=_say, device=args.device or "auto")
    _push(args, api, args.output)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from peftlab.export.formats import FORMATS

    device = args.device or "auto"
    if args.format == "vllm":  # several adapters on one base, and the command line that serves them
        from peftlab.export.to_lora import parse_rank
        from peftlab.export.to_vllm import export_vllm

        api = _hub(args)
        export_vllm(args.source, args.output, parse_rank(args.rank), args.model, args.overwrite, say=_say, device=device)
        _push(args, api, args.output)
        return 0
    if len(args.source) > 1:
        raise PeftlabError(f"--format {args.format} exports one source; got {len(args.source)} (--format vllm takes several)")
    args.source = args.source[0]
    if args.format == "lora":  # a folder, not a GGUF file: its own module and a rank instead of a tensor type
        from peftlab.export.to_lora import export_lora, parse_rank

        api = _hub(args)
        export_lora(args.source, args.output, parse_rank(args.rank), args.model, args.overwrite, say=_say, device=device)
        _push(args, api, args.output)
        return 0
    api = _hub(args)
    FORMATS[args.format].write(args.source, args.output, args.tensor_type, args.model, args.overwrite, say=_say, device=device)
    _push(args, api, args.output)
    return 0


def command_check(args: argparse.Namespace) -> int:
    from peftlab.data.examples import scored_prompts, subsample
    from peftlab.data.readers import read_rows
    from peftlab.evaluate.settings import generate_config
    from peftlab.export.parity import Server, check_parity, table
    from peftlab.generation import GenerationSettings

    if not 0 <= args.min_agreement <= 1:
        raise PeftlabError(f"--min-agreement is a share between 0 and 1, got {args.min_agreement}")
    config = generate_config(args.adapter, [], config_flags(args, NOT_TRAINING), args.max_samples or 24)
    rows = subsample(read_rows(args.data, config.data.max_row_bytes), 1, config.data.max_samples)
    settings = GenerationSettings(args.max_new_tokens, 1, 16)
    settings.check()
    if args.server_model and not args.server:
        raise PeftlabError("--server-model names a model on a server: pass --server URL too")
    server = Server(args.server, args.server_model, os.environ.get("PEFTLAB_API_KEY")) if args.server else None
    parity = check_parity(config, args.adapter, scored_prompts(rows, config.data), settings, args.gguf,
                          say=_say, server=server, lora=args.lora, gguf_lora=args.gguf_lora, base_gguf=args.base_gguf)
    _say(table(parity))
    failures = [f"{runtime}: {100 * parity.agreement(runtime):.0f}% identical, below {100 * args.min_agreement:.0f}%"
                for runtime in parity.answers if parity.agreement(runtime) < args.min_agreement] + parity.setup_problems
    for line in failures:
        _say(f"check failed: {line}")
    if not failures:
        _say(f"check passed: every runtime gave at least {100 * args.min_agreement:.0f}% identical answers; templates and stop tokens agree")
    return 1 if failures else 0


def command_serve(args: argparse.Namespace) -> int:
    from peftlab.config import check_at_least_one
    from peftlab.serve.launch import read_api_key, serve

    if args.refused_api_key is not None:
        raise PeftlabError("--api-key is not accepted: a key on the command line is visible to every user of this machine (ps); "
                           "write it to a file and pass --api-key-file PATH, or set $PEFTLAB_API_KEY")
    limits = serve_limits(args)
    check_at_least_one(max_batch_size=args.max_batch_size, prefill_chunk_tokens=args.prefill_chunk_tokens, **({} if args.max_adapters is None else {"max_adapters": args.max_adapters}))
    api_key = read_api_key(args.api_key_file, os.environ.get("PEFTLAB_API_KEY"), say=_say)
    serve(args.model, args.adapter, args.host, args.port, api_key, args.dtype, limits, args.max_batch_size,
          args.prefill_chunk_tokens, args.name, say=_say, adapter_dir=args.adapter_dir, max_adapters=args.max_adapters,
          device=args.device or "auto")
    return 0

COMMANDS = {"train": command_train, "eval": command_eval, "demo": command_demo, "compare": command_compare, "methods": command_methods,
            "generate": command_generate, "merge": command_merge, "export": command_export, "check": command_check,
            "serve": command_serve}


