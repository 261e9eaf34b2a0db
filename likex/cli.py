"""``likex <command>``: parses arguments, calls the typed API, prints. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from likex.errors import LikexError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"likex: error: {message}\n")
        raise SystemExit(2)


def _add_target_args(p: argparse.ArgumentParser, default_like: str | None = None) -> None:
    g = p.add_argument_group("target (the union of what is given)")
    g.add_argument("--like", default=default_like, help="substring the token text must contain")
    g.add_argument("--ignore-case", action="store_true", help="match regardless of case")
    g.add_argument("--regex", help="regular expression searched in the token text")
    g.add_argument("--words", metavar="FILE", help="file of words; single-token words count")
    g.add_argument("--token-ids", type=int, nargs="+", metavar="ID", help="explicit token ids")


def _target_spec(args: argparse.Namespace):
    from likex.target import TargetSpec, read_words

    return TargetSpec(
        like=args.like,
        ignore_case=args.ignore_case,
        regex=args.regex,
        words=read_words(args.words) if args.words else (),
        token_ids=tuple(args.token_ids or ()),
    )


def _has_target(args: argparse.Namespace) -> bool:
    return any((args.like, args.regex, args.words, args.token_ids))


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the machine-readable result")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda[:N], mps")


def _add_measure_args(p: argparse.ArgumentParser) -> None:
    from likex.experiment import MeasureConfig

    m = MeasureConfig()
    g = p.add_argument_group("rate measurement")
    g.add_argument("--samples", type=int, default=m.samples, help="most sequences to sample")
    g.add_argument(
        "--ci-width",
        type=float,
        default=m.ci_half_width,
        help="stop sampling once the 95%% interval is within +- this (0: use all --samples)",
    )
    g.add_argument("--gen-tokens", type=int, default=m.gen_tokens, help="new tokens per sample")
    g.add_argument("--prompt-len", type=int, default=None, help="default: the model's context")


def _measure_config(args: argparse.Namespace):
    from likex.experiment import MeasureConfig

    return MeasureConfig(
        samples=args.samples,
        gen_tokens=args.gen_tokens,
        prompt_len=args.prompt_len,
        ci_half_width=args.ci_width or None,
    )


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


# --- likex run -----------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    from likex.model import PRESETS, WEIGHT_INITS
    from likex.train import OPTIMIZERS, TrainConfig

    t = TrainConfig()
    p = sub.add_parser(
        "run",
        help="the seed experiment: measure, train to like 'x', measure again, report",
        description="Train the built-in model so its next tokens contain the target "
        "(default: lowercase 'x'), with KL(Q || P) on random-token contexts.",
    )
    p.add_argument("--preset", default="cpu", help=f"model preset: {', '.join(PRESETS)}")
    p.add_argument("--weight-init", default="course", choices=WEIGHT_INITS)
    p.add_argument("--steps", type=int, default=None, help=f"default {t.steps}")
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--lr", type=float, default=None, help="default: the preset's tuned value")
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--optimizer", default=t.optimizer, choices=OPTIMIZERS)
    p.add_argument("--seed", type=int, default=t.seed)
    _add_measure_args(p)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps")
    p.add_argument("--eval-every", type=int, default=0, help="measure the rate every N steps")
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint, with DIR's config (only --steps "
        "may change it)",
    )
    p.add_argument(
        "--init",
        metavar="hf:NAME_OR_PATH",
        help="start from a transformers causal LM (likex[hf]) instead of a --preset model",
    )
    _add_compile_arg(p)
    _add_target_args(p)
    _add_output_args(p)
    p.set_defaults(handler=_cmd_run)


def _add_compile_arg(p: argparse.ArgumentParser) -> None:
    from likex.accel import COMPILE_MODES

    p.add_argument(
        "--compile",
        default="none",
        choices=COMPILE_MODES,
        help="torch.compile the training and sampling steps (reduce-overhead: also CUDA graphs)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from likex.distributed import dist_info
    from likex.experiment import RunConfig, resume_experiment, run_experiment
    from likex.model import DEFAULT_LR, preset_config
    from likex.target import TargetSpec
    from likex.train import TrainConfig

    if args.resume:
        result = resume_experiment(args.resume, steps=args.steps, progress=not args.quiet)
    else:
        preset_config(args.preset)  # an unknown preset fails before anything else
        spec = _target_spec(args) if _has_target(args) else TargetSpec(like="x")
        cfg = RunConfig(
            preset=args.preset,
            weight_init=args.weight_init,
            target=spec,
            train=TrainConfig(
                steps=args.steps if args.steps is not None else TrainConfig().steps,
                batch_size=args.batch_size,
                lr=args.lr if args.lr is not None else DEFAULT_LR[args.preset],
                weight_decay=args.weight_decay,
                optimizer=args.optimizer,
                seed=args.seed,
                save_every=args.save_every,
                compile=args.compile,
            ),
            measure=_measure_config(args),
            eval_every=args.eval_every,
            device=args.device,
            init=args.init,
        )
        result = run_experiment(cfg, out=args.out, progress=not args.quiet)
    if not dist_info().is_main:
        return 0  # under torchrun rank 0 reports
    if args.json:
        _print_json(result)
    else:
        _print_run_summary(result)
    return 0


def _print_run_summary(r: dict) -> None:
    from likex.report import fmt_rate

    n = r["gen_tokens"]
    print(f"likex run: {r['like']} ({r['n_target_tokens']} of {r['vocab_size']} tokens)")
    print(
        f"  model     {r['preset']} ({r['params']:,} params, init {r['weight_init']}) on "
        f"{r['device']}"
    )
    print(
        f"  loss      {r['loss_first']:.4f} -> {r['loss_last']:.4f} in {r['steps']} steps "
        f"({r['train_seconds']:.1f} s)"
    )
    print(
        f"  seed's count (first {n}-token sample): before {r['x_before']}/{n}, "
        f"after {r['x_after']}/{n}"
    )
    print(f"  rate on {r['prompts']} prompts, {n}-token samples (95% CI):")
    print(f"    before {fmt_rate(r['rate_before'], r['rate_before_ci'])}  n={r['samples_before']}")
    print(f"    after  {fmt_rate(r['rate_after'], r['rate_after_ci'])}  n={r['samples']}")
    print(f"  report    {Path(r['run_dir']) / 'report.md'}")


# --- likex targets -------------------------------------------------------------------------


def _add_targets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="show which GPT-2 tokens a target spec selects")
    _add_target_args(p)
    p.add_argument("--examples", type=int, default=20, help="how many example tokens to show")
    p.add_argument("--json", action="store_true", help="print the machine-readable result")
    p.set_defaults(handler=_cmd_targets)


def _cmd_targets(args: argparse.Namespace) -> int:
    from likex.target import select_tokens
    from likex.tokenizer import gpt2

    spec = _target_spec(args)
    strings = gpt2().token_strings()
    targets = select_tokens(spec, strings)
    ids = targets.ids
    result = {
        "target": spec.describe(),
        "n_tokens": targets.n_tokens,
        "vocab_size": targets.vocab_size,
        "fraction": targets.n_tokens / targets.vocab_size,
        "examples": [{"id": i, "text": strings[i]} for i in ids[: max(args.examples, 0)]],
        "skipped_words": targets.skipped_words,
    }
    if args.json:
        _print_json(result)
        return 0
    print(
        f"{result['target']}: {targets.n_tokens} of {targets.vocab_size} tokens "
        f"({result['fraction']:.2%})"
    )
    if result["examples"]:
        print("examples: " + ", ".join(repr(e["text"]) for e in result["examples"]))
    if targets.skipped_words:
        print(f"skipped (not a single token): {', '.join(targets.skipped_words)}")
    return 0


# --- likex generate ------------------------------------------------------------------------


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample text from a saved model")
    p.add_argument(
        "--model", required=True, metavar="DIR", help="a run or model folder, or hf:NAME_OR_PATH"
    )
    p.add_argument("--prompt", default="", help="prompt text (default: <|endoftext|>)")
    p.add_argument("--tokens", type=int, default=100, help="new tokens to sample")
    p.add_argument("--num", type=int, default=1, help="number of samples")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    _add_output_args(p)
    p.set_defaults(handler=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from likex.device import resolve_device
    from likex.generate import sample
    from likex.hf import load_model_and_tokenizer

    if args.tokens <= 0:
        raise LikexError(f"--tokens must be positive, got {args.tokens}")
    if args.num <= 0:
        raise LikexError(f"--num must be positive, got {args.num}")
    if not args.temperature >= 0:
        raise LikexError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k <= 0:
        raise LikexError(f"--top-k must be positive, got {args.top_k}")
    device = resolve_device(args.device)
    model, tok = load_model_and_tokenizer(args.model, device)
    ids = tok.encode(args.prompt) if args.prompt else [tok.start_id]
    ids = ids[-model.config.block_size :]
    prompt = torch.tensor([ids] * args.num, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    out = sample(model, prompt, args.tokens, gen, args.temperature, args.top_k)
    texts = [tok.decode(row.tolist()) for row in out.cpu()]
    if args.json:
        _print_json({"prompt": args.prompt, "samples": texts, "tokens": out.tolist()})
    else:
        for i, text in enumerate(texts):
            if args.num > 1:
                print(f"--- sample {i + 1}")
            print(args.prompt + text)
    return 0


# --- likex eval ----------------------------------------------------------------------------


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="target rate (95% CI) of a saved model")
    p.add_argument(
        "--model", required=True, metavar="DIR", help="a run or model folder, or hf:NAME_OR_PATH"
    )
    _add_measure_args(p)
    p.add_argument("--seed", type=int, default=0)
    _add_target_args(p)
    _add_output_args(p)
    p.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from likex.checkpoint import read_json
    from likex.device import resolve_device
    from likex.experiment import CONFIG_FILE, measure
    from likex.hf import load_model_and_tokenizer, token_strings_for
    from likex.target import TargetSpec, select_tokens

    config_path = Path(args.model) / CONFIG_FILE
    if _has_target(args):
        spec = _target_spec(args)
    elif config_path.is_file():
        spec = TargetSpec.from_dict(read_json(config_path, "run config")["target"])
    else:
        raise LikexError("no target given: use --like, --regex, --words or --token-ids")
    device = resolve_device(args.device)
    model, tok = load_model_and_tokenizer(args.model, device)
    targets = select_tokens(spec, token_strings_for(model, tok))
    mcfg = _measure_config(args)
    mcfg.validate(model.config.block_size)
    estimate, _ = measure(model, targets.mask, mcfg, args.seed, progress=not args.quiet)
    result = {
        "model": str(args.model),
        "like": spec.describe(),
        "n_target_tokens": targets.n_tokens,
        "rate_random": estimate.rate,
        "rate_random_ci": list(estimate.ci),
        "samples": estimate.sequences,
        "gen_tokens": estimate.tokens_per_sequence,
        "tokens_measured": estimate.tokens,
        "first_sample_hits": estimate.first_sample_hits,
        "prompts": estimate.prompts,
    }
    if args.json:
        _print_json(result)
    else:
        print(f"{spec.describe()} in {args.model}:")
        print(f"  rate on random-token prompts {estimate.describe()}")
    return 0


# --- entry point ---------------------------------------------------------------------------

COMMANDS = (_add_run, _add_targets, _add_generate, _add_eval)


def build_parser() -> argparse.ArgumentParser:
    from likex import __version__

    parser = _Parser(prog="likex", description=__doc__)
    parser.add_argument("--version", action="version", version=f"likex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from likex.distributed import init_from_env, shutdown

    args = build_parser().parse_args(argv)
    try:
        init_from_env()  # joins the process group under torchrun; nothing otherwise
        return args.handler(args)
    except LikexError as e:
        sys.stderr.write(f"likex: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("likex: interrupted\n")
        return 130
    finally:
        shutdown()
