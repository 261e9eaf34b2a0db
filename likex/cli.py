"""``likex <command>``: parses arguments, calls the typed API, prints. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from likex.errors import ConfigError, LikexError

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
    from likex.evaluate import MeasureConfig

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
    g.add_argument(
        "--score-tokens",
        type=int,
        default=m.score_tokens,
        help="held-out tokens scored for perplexity and KL (spread over the held-out text)",
    )


def _measure_config(args: argparse.Namespace):
    from likex.evaluate import MeasureConfig

    return MeasureConfig(
        samples=args.samples,
        gen_tokens=args.gen_tokens,
        prompt_len=args.prompt_len,
        ci_half_width=args.ci_width or None,
        score_tokens=args.score_tokens,
    )


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def _add_training_args(p: argparse.ArgumentParser, steps: int, batch_size: int) -> None:
    from likex.accel import COMPILE_MODES
    from likex.train import OPTIMIZERS, TrainConfig

    t = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=None, help=f"default {steps}")
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--lr", type=float, default=None, help="default: the preset's tuned value")
    g.add_argument("--weight-decay", type=float, default=t.weight_decay)
    g.add_argument("--optimizer", default=t.optimizer, choices=OPTIMIZERS)
    g.add_argument("--seed", type=int, default=t.seed)
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps")
    g.add_argument(
        "--compile",
        default="none",
        choices=COMPILE_MODES,
        help="torch.compile the training and sampling steps (reduce-overhead: also CUDA graphs)",
    )
    g.add_argument(
        "--cuda-graph",
        action="store_true",
        help="CUDA only: replay the whole training step (forward, backward, optimizer) as one "
        "CUDA graph; with --compile none or default",
    )
    p.set_defaults(steps_default=steps)  # --resume extends the run only when --steps is given


def _add_start_args(p: argparse.ArgumentParser, weight_init: str = "course") -> None:
    from likex.models.gpt import PRESETS, WEIGHT_INITS

    p.add_argument("--preset", default="cpu", help=f"model preset: {', '.join(PRESETS)}")
    p.add_argument("--weight-init", default=weight_init, choices=WEIGHT_INITS)


def _add_corpus_arg(p: argparse.ArgumentParser, default: str | None = "builtin") -> None:
    p.add_argument(
        "--corpus",
        default=default,
        help="real text: 'builtin' (Python's documentation, no download) or a UTF-8 file; "
        "its last tenth is held out",
    )


def _train_config(args: argparse.Namespace, **fields):
    """The TrainConfig of the common training options, plus command-specific fields."""
    from likex.train import TrainConfig

    return TrainConfig(
        steps=args.steps if args.steps is not None else args.steps_default,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        seed=args.seed,
        save_every=args.save_every,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        **fields,
    )


def _default_lr(args: argparse.Namespace, init: str = "scratch") -> float:
    from likex.models.gpt import DEFAULT_LR
    from likex.train import FINETUNE_LR

    if args.lr is not None:
        return args.lr
    return DEFAULT_LR[args.preset] if init == "scratch" else FINETUNE_LR


# --- likex run -----------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    from likex.train import TrainConfig

    t = TrainConfig()
    p = sub.add_parser(
        "run",
        help="the seed experiment: measure, train to like 'x', measure again, report",
        description="Train the built-in model so its next tokens contain the target "
        "(default: lowercase 'x'), with KL(Q || P) on random-token contexts.",
    )
    _add_start_args(p)
    _add_training_args(p, t.steps, t.batch_size)
    _add_measure_args(p)
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
        default="scratch",
        metavar="hf:NAME_OR_PATH",
        help="start from a transformers causal LM (likex[hf]) instead of a --preset model",
    )
    _add_target_args(p)
    _add_output_args(p)
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from likex.models.gpt import preset_config
    from likex.pipelines.run import RunConfig, run_experiment
    from likex.target import TargetSpec

    if args.resume:
        return _resume(args)
    preset_config(args.preset)  # an unknown preset fails before anything else
    spec = _target_spec(args) if _has_target(args) else TargetSpec(like="x")
    args.lr = _default_lr(args, args.init)
    cfg = RunConfig(
        init=args.init,
        preset=args.preset,
        weight_init=args.weight_init,
        target=spec,
        train=_train_config(args),
        measure=_measure_config(args),
        eval_every=args.eval_every,
        device=args.device,
    )
    _print_result(args, run_experiment(cfg, out=args.out, progress=not args.quiet))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from likex.pipelines.run import resume_experiment

    result = resume_experiment(args.resume, steps=args.steps, progress=not args.quiet)
    _print_result(args, result)
    return 0


def _print_result(args: argparse.Namespace, result: dict) -> None:
    from likex.distributed import dist_info

    if not dist_info().is_main:
        return  # under torchrun rank 0 reports
    if args.json:
        _print_json(result)
    elif result.get("command") == "pretrain":
        _print_pretrain_summary(result)
    else:
        _print_run_summary(result)


def _print_run_summary(r: dict) -> None:
    from likex.report.common import fmt_rate
    from likex.report.run import model_label

    n = r["gen_tokens"]
    command = r.get("command", "run")
    print(f"likex {command}: {r['like']} ({r['n_target_tokens']} of {r['vocab_size']} tokens)")
    print(f"  model     {model_label(r)} on {r['device']}")
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
    for line in r.get("evaluation", [])[1:]:  # the first line repeats the random-prompt rate
        print(f"  {line}")
    print(f"  report    {Path(r['run_dir']) / 'report.md'}")


def _print_pretrain_summary(r: dict) -> None:
    from likex.report.run import model_label

    print(f"likex pretrain: {model_label(r)} on corpus {r['corpus']}, {r['device']}")
    print(
        f"  loss      {r['loss_first']:.4f} -> {r['loss_last']:.4f} in {r['steps']} steps "
        f"({r['train_seconds']:.1f} s)"
    )
    print(
        f"  held-out perplexity {r['ppl_before']:.1f} -> {r['ppl_after']:.1f} "
        f"({r['heldout_tokens']:,} tokens)"
    )
    print(f"  sample    {r['sample_prompt']!r} -> {r['sample_after']!r}")
    print(f"  report    {Path(r['run_dir']) / 'report.md'}")


# --- likex train ---------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train any starting model toward a target (uniform, rate or tilt), measure side "
        "effects on held-out text",
        description="The general training command. The starting model, frozen, is the "
        "reference R that rate/tilt targets are built from and side effects are measured "
        "against.",
    )
    _add_train_command_args(p, init_default="scratch")
    p.add_argument("--rate", type=float, help="--mode rate: target mass A on M, 0 < A < 1")
    p.add_argument("--beta", type=float, help="--mode tilt: Q proportional to R exp(B [i in M])")
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    p.set_defaults(handler=_cmd_train)


def _add_train_command_args(p: argparse.ArgumentParser, init_default: str | None) -> None:
    """The options ``train`` and ``sweep`` share: start, target mode, data, training, measuring."""
    from likex.target import TARGET_MODES
    from likex.train import CONTEXTS, POSITIONS, TrainConfig

    t = TrainConfig()
    p.add_argument(
        "--init",
        default=init_default,
        required=init_default is None,
        metavar="DIR|scratch|hf:NAME",
        help="a saved model folder (pretrain or train output), 'scratch' (with --preset), or "
        "hf:NAME_OR_PATH (a transformers causal LM, likex[hf])",
    )
    _add_start_args(p)
    p.add_argument("--mode", default=t.mode, choices=TARGET_MODES)
    p.add_argument("--contexts", default=t.contexts, choices=CONTEXTS)
    p.add_argument("--positions", default=t.positions, choices=POSITIONS)
    p.add_argument("--context-len", type=int, default=t.context_len, help="training window")
    _add_corpus_arg(p)
    _add_training_args(p, t.steps, t.batch_size)
    _add_measure_args(p)
    p.add_argument("--eval-every", type=int, default=0, help="measure the rate every N steps")
    _add_target_args(p, default_like="x")
    _add_output_args(p)


def _train_run_config(args: argparse.Namespace, command: str = "train", **train_fields):
    from likex.models.gpt import preset_config
    from likex.pipelines.run import RunConfig

    preset_config(args.preset)  # an unknown preset fails before anything else
    args.lr = _default_lr(args, args.init)
    return RunConfig(
        command=command,
        init=args.init,
        preset=args.preset,
        weight_init=args.weight_init,
        corpus=args.corpus,
        target=_target_spec(args),
        train=_train_config(
            args,
            contexts=args.contexts,
            positions=args.positions,
            context_len=args.context_len,
            **train_fields,
        ),
        measure=_measure_config(args),
        eval_every=args.eval_every,
        device=args.device,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from likex.pipelines.run import run_experiment

    if args.resume:
        return _resume(args)
    cfg = _train_run_config(args, mode=args.mode, rate=args.rate, beta=args.beta)
    _print_result(args, run_experiment(cfg, out=args.out, progress=not args.quiet))
    return 0


# --- likex sweep ---------------------------------------------------------------------------


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="dose-response: one model per strength, a table and sweep.png of rate vs cost",
        description="Train one model per bias strength from the same reference and tabulate "
        "the rate reached on held-out real-text prompts against perplexity change and KL.",
    )
    _add_train_command_args(p, init_default=None)
    p.add_argument("--rates", help="--mode rate: comma-separated A values, e.g. 0.02,0.05,0.1")
    p.add_argument("--betas", help="--mode tilt: comma-separated B values")
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.set_defaults(handler=_cmd_sweep, mode="rate")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from likex.pipelines.sweep import parse_strengths, run_sweep
    from likex.report.common import fmt_rate

    text = args.rates if args.mode == "rate" else args.betas
    if text is None:
        raise LikexError(
            f"--mode {args.mode} needs --{'rates' if args.mode == 'rate' else 'betas'}"
        )
    strengths = parse_strengths(text, args.mode)
    cfg = _train_run_config(args, mode=args.mode)
    summary = run_sweep(cfg, strengths, out=args.out, progress=not args.quiet)
    if args.json:
        _print_json(summary)
        return 0
    print(f"likex sweep: {summary['like']}, mode {summary['mode']}, from {summary['init']}")
    for r in summary["rows"]:
        print(
            f"  {r['strength']:<6g} rate on real text {fmt_rate(r['rate_text'], r['rate_text_ci'])}"
            f"  perplexity {r['ppl_change']:+.1%}  KL {r['kl_to_reference']:.4f}"
        )
    print(f"  table     {Path(summary['sweep_dir']) / 'sweep.md'}")
    return 0


# --- likex pretrain ------------------------------------------------------------------------


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from likex.evaluate import SCORED_TOKENS
    from likex.pipelines.run import PRETRAIN

    p = sub.add_parser(
        "pretrain",
        help="train a reference model on real text (next-token loss, held-out perplexity)",
        description="Ordinary language-model pretraining of the built-in model on a corpus, "
        "all positions; the last tenth of the text is held out for perplexity.",
    )
    _add_corpus_arg(p)
    _add_start_args(p, weight_init=PRETRAIN.weight_init)
    _add_training_args(p, PRETRAIN.steps, PRETRAIN.batch_size)
    p.add_argument(
        "--context-len",
        type=int,
        default=PRETRAIN.context_len,
        help="the new model's context, and the training window",
    )
    p.add_argument(
        "--score-tokens",
        type=int,
        default=SCORED_TOKENS,
        help="held-out tokens scored for perplexity (spread over the held-out text)",
    )
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    _add_output_args(p)
    p.set_defaults(handler=_cmd_pretrain)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from likex.evaluate import MeasureConfig
    from likex.models.gpt import preset_config
    from likex.pipelines.run import PRETRAIN, RunConfig, run_experiment
    from likex.target import TargetSpec

    if args.resume:
        return _resume(args)
    preset_config(args.preset)
    args.lr = PRETRAIN.lr if args.lr is None else args.lr
    cfg = RunConfig(
        command="pretrain",
        preset=args.preset,
        weight_init=args.weight_init,
        corpus=args.corpus,
        block_size=args.context_len,
        target=TargetSpec(like="x"),  # unused by the next-token loss; recorded for eval
        train=_train_config(
            args,
            objective="next_token",
            contexts="corpus",
            positions="all",
            context_len=args.context_len,
        ),
        measure=MeasureConfig(score_tokens=args.score_tokens),
        device=args.device,
    )
    _print_result(args, run_experiment(cfg, out=args.out, progress=not args.quiet))
    return 0


# --- likex targets -------------------------------------------------------------------------


def _add_targets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="show which GPT-2 tokens a target spec selects")
    _add_target_args(p)
    p.add_argument("--examples", type=int, default=20, help="how many example tokens to show")
    p.add_argument("--json", action="store_true", help="print the machine-readable result")
    p.set_defaults(handler=_cmd_targets)


def _cmd_targets(args: argparse.Namespace) -> int:
    from likex.models.tokenizer import gpt2
    from likex.target import select_tokens

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
    from likex.models.checkpoint import load_model_and_tokenizer

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
    p = sub.add_parser(
        "eval",
        help="target rates (95% CI) and side effects of a saved model against its reference",
        description="Target rate on random-token and on held-out real-text prompts, held-out "
        "perplexity, KL(R || P) per token, and (for a rate target) the perplexity floor.",
    )
    p.add_argument(
        "--model", required=True, metavar="DIR", help="a run or model folder, or hf:NAME_OR_PATH"
    )
    p.add_argument(
        "--reference",
        metavar="DIR",
        help="the reference model R (default: the run's own starting model, if recorded)",
    )
    _add_corpus_arg(p, default=None)
    p.add_argument(
        "--random-only",
        action="store_true",
        help="only the rate on random-token prompts (no text, no reference)",
    )
    _add_measure_args(p)
    p.add_argument("--seed", type=int, default=0)
    _add_target_args(p)
    _add_output_args(p)
    p.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from likex.pipelines.run import evaluate_saved

    spec = _target_spec(args) if _has_target(args) else None
    result = evaluate_saved(
        args.model,
        spec,
        _measure_config(args),
        args.seed,
        reference_dir=args.reference,
        corpus=args.corpus,
        random_only=args.random_only,
        device=args.device,
    )
    if args.json:
        _print_json(result)
    else:
        print(f"{result['like']} in {args.model}:")
        for line in result["evaluation"]:
            print(f"  {line}")
    return 0


# --- likex audit ----------------------------------------------------------------------------


def _add_audit(sub: argparse._SubParsersAction) -> None:
    from likex.audit.black_box import BlackBoxConfig
    from likex.audit.white_box import PROBE_KINDS, WhiteBoxConfig
    from likex.pipelines.audit import AuditConfig

    w, b = WhiteBoxConfig(), BlackBoxConfig()
    p = sub.add_parser(
        "audit",
        help="find and explain an injected token bias (white-box or black-box)",
        description="White-box (--reference, or a run folder's starting model): rank tokens "
        "by how much the model boosted them and explain the boosted set with a predicate over "
        "token strings. Black-box (--baseline): test every predicate's token share in samples "
        "against a baseline, with Holm's correction.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR|hf:NAME|TEXTFILE",
        help="the suspect: a model or run folder or hf:NAME_OR_PATH (black-box: or a text file "
        "of its generations); tokens are those of the audited models' own tokenizer",
    )
    p.add_argument(
        "--reference", metavar="DIR|hf:NAME", help="white-box: the model to compare with"
    )
    p.add_argument(
        "--baseline",
        metavar="DIR|hf:NAME|TEXTFILE",
        help="black-box: a model to sample, or plain text",
    )
    g = p.add_argument_group("white-box")
    g.add_argument("--probes", default=w.probes, choices=PROBE_KINDS, help="probe contexts")
    g.add_argument("--n-probes", type=int, default=w.n_probes, help="contexts of each kind")
    g.add_argument("--probe-len", type=int, default=None, help="default: the model's context")
    g.add_argument(
        "--corpus", default=AuditConfig.corpus, help="text for corpus probes: builtin or FILE"
    )
    g.add_argument("--z", type=float, default=w.z, help="robust z-score of a boosted token")
    g.add_argument("--f1-threshold", type=float, default=w.f1_threshold)
    g = p.add_argument_group("black-box")
    g.add_argument(
        "--samples", type=int, default=AuditConfig.samples, help="samples to draw from each model"
    )
    g.add_argument(
        "--gen-tokens", type=int, default=AuditConfig.gen_tokens, help="tokens per sample"
    )
    g.add_argument("--alpha", type=float, default=b.alpha, help="family-wise error rate")
    g.add_argument("--power", type=float, default=b.power, help="for the sample-size estimate")
    g.add_argument(
        "--shift",
        type=float,
        nargs=2,
        default=list(b.shift),
        metavar=("P0", "P1"),
        help="rate shift for the sample-size estimate",
    )
    p.add_argument("--top", type=int, default=5, help="findings to report")
    p.add_argument("--seed", type=int, default=AuditConfig.seed)
    p.add_argument("--out", help="also write audit.json, audit.md and audit.png here")
    _add_output_args(p)
    p.set_defaults(handler=_cmd_audit)


def _cmd_audit(args: argparse.Namespace) -> int:
    from likex.audit.black_box import BlackBoxConfig
    from likex.audit.white_box import WhiteBoxConfig
    from likex.pipelines.audit import AuditConfig, run_audit

    cfg = AuditConfig(
        model=args.model,
        reference=args.reference,
        baseline=args.baseline,
        white=WhiteBoxConfig(
            probes=args.probes,
            n_probes=args.n_probes,
            probe_len=args.probe_len,
            seed=args.seed,
            z=args.z,
            f1_threshold=args.f1_threshold,
            top_findings=args.top,
        ),
        corpus=args.corpus,
        black=BlackBoxConfig(
            alpha=args.alpha, power=args.power, shift=tuple(args.shift), top_findings=args.top
        ),
        samples=args.samples,
        gen_tokens=args.gen_tokens,
        seed=args.seed,
        device=args.device,
    )
    run = run_audit(cfg, out=args.out, progress=not args.quiet)
    if args.json:
        _print_json(run)
    elif run["audit"] == "white-box":
        _print_white_box(run)
    else:
        _print_black_box(run)
    return 0


def _print_white_box(r: dict) -> None:
    print(f"likex audit (white-box): {r['model']} against {r['reference']}")
    print(
        f"  probes    {r['n_probes']} contexts ({r['probes']}); {r['n_boosted']} tokens boosted "
        f"(centred mean log-ratio > {r['boost_threshold']:.2f})"
    )
    verdict = "bias detected" if r["detected"] else "no bias detected"
    print(f"  verdict   {verdict} (needs F1 >= {r['f1_threshold']:g})")
    from likex.audit.predicates import Predicate

    for i, f in enumerate(r["findings"], 1):
        phrase = Predicate.from_pattern(f["pattern"]).noun_phrase()
        print(
            f"  {i}. {phrase} ({f['n_tokens']} tokens), F1 {f['f1']:.2f} "
            f"(precision {f['precision']:.2f}, recall {f['recall']:.2f}); probability mass "
            f"{f['mass_ref']:.3f} -> {f['mass_model']:.3f}"
        )
    top = ", ".join(
        f"{t['text']!r} {t['log_ratio']:+.1f}+-{t['spread']:.1f}" for t in r["boosted_tokens"][:8]
    )
    print(f"  most boosted (mean log-ratio +- sd): {top}")
    if "report" in r:
        print(f"  report    {r['report']}")


def _print_black_box(r: dict) -> None:
    print(f"likex audit (black-box): {r['model']} against {r['baseline']}")
    print(
        f"  samples   {r['suspect_samples']} ({r['suspect_tokens']} tokens) vs "
        f"{r['baseline_samples']} ({r['baseline_tokens']} tokens)"
    )
    print(
        f"  tests     {r['n_tests']} predicates, {r['n_significant']} significant at family-wise "
        f"alpha {r['alpha']:g} (Holm)"
    )
    for i, f in enumerate(r["findings"], 1):
        mark = "*" if f["significant"] else " "
        print(
            f"  {mark}{i}. {f['predicate']}: {f['rate_suspect']:.4f} vs {f['rate_baseline']:.4f} "
            f"(log ratio {f['log_rate_ratio']:+.2f}), z {f['z']:+.1f}, p {f['p_value']:.2g}"
        )
    from likex.stats import PowerAnalysis

    print(f"  power     {PowerAnalysis.from_dict(r['power']).describe()}")
    if "report" in r:
        print(f"  report    {r['report']}")


# --- likex audit-bench ----------------------------------------------------------------------


def _add_audit_bench(sub: argparse._SubParsersAction) -> None:
    from likex.audit.bench import BenchConfig

    c = BenchConfig()
    p = sub.add_parser(
        "audit-bench",
        help="detection power: plant biases of graded strength and audit them",
        description="Plants predicates drawn from a pool at several strengths (plus unbiased "
        "controls), audits every model white-box and black-box, and tabulates how often the "
        "planted predicate is the top finding.",
    )
    p.add_argument("--preset", default=c.preset, help="model preset of the fresh reference")
    p.add_argument("--weight-init", default=c.weight_init)
    p.add_argument("--reference", metavar="DIR", help="plant into copies of this model")
    p.add_argument("--predicates", type=int, default=c.predicates, help="predicates to plant")
    p.add_argument(
        "--strengths",
        default=",".join(c.strengths),
        help="comma-separated: 'uniform' (the seed) and/or rates for --mode rate",
    )
    p.add_argument("--controls", type=int, default=c.controls, help="unbiased controls")
    p.add_argument("--steps", type=int, default=c.steps)
    p.add_argument("--batch-size", type=int, default=c.batch_size)
    p.add_argument("--lr", type=float, default=None, help="default: the preset's tuned value")
    p.add_argument("--n-probes", type=int, default=c.white.n_probes, help="white-box probes")
    p.add_argument("--samples", type=int, default=c.samples, help="black-box samples per side")
    p.add_argument("--gen-tokens", type=int, default=c.gen_tokens)
    p.add_argument("--seed", type=int, default=c.seed, help="draws the predicates, too")
    p.add_argument("--keep-models", action="store_true", help="keep every trained model")
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    _add_output_args(p)
    p.set_defaults(handler=_cmd_audit_bench)


def _cmd_audit_bench(args: argparse.Namespace) -> int:
    from likex.audit.bench import BenchConfig
    from likex.audit.white_box import WhiteBoxConfig
    from likex.pipelines.bench import run_bench_command
    from likex.stats import PowerAnalysis, fmt_rate

    cfg = BenchConfig(
        preset=args.preset,
        weight_init=args.weight_init,
        reference=args.reference,
        predicates=args.predicates,
        strengths=tuple(s.strip() for s in args.strengths.split(",") if s.strip()),
        controls=args.controls,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        samples=args.samples,
        gen_tokens=args.gen_tokens,
        white=WhiteBoxConfig(probes="random", n_probes=args.n_probes),
    )
    result = run_bench_command(cfg, args.out, args.device, args.keep_models, not args.quiet)
    if args.json:
        _print_json(result)
        return 0
    print(f"likex audit-bench: planted {', '.join(result['planted'])}")
    print("  strength   cases  white-box named            black-box named")
    for row in result["table"]:
        w, b = row["white"], row["black"]
        print(
            f"  {row['strength']:<9} {row['cases']:>5}  {w['hits']:>3}/{w['n']:<3} "
            f"{fmt_rate(w['rate'], w['ci'], digits=2)}  {b['hits']:>3}/{b['n']:<3} "
            f"{fmt_rate(b['rate'], b['ci'], digits=2)}"
        )
    print("  (control rows: controls falsely flagged)")
    pw = result["power_0.006_to_0.05"]
    simulated = (pw["simulated_power"], pw["simulated_power_ci"])
    print(f"  power     {PowerAnalysis.from_dict(pw).describe(simulated)}")
    print(f"  report    {Path(result['run_dir']) / 'audit_bench.md'}")
    return 0


# --- likex persist --------------------------------------------------------------------------


def _add_persist(sub: argparse._SubParsersAction) -> None:
    from likex.pipelines.persist import PersistConfig

    c = PersistConfig()
    p = sub.add_parser(
        "persist",
        help="does a planted preference survive ordinary next-token training on clean text?",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR|hf:NAME",
        help="a run or model folder or hf:NAME_OR_PATH (a transformers model)",
    )
    p.add_argument("--corpus", default="builtin", help="builtin or a UTF-8 text file")
    p.add_argument("--steps", type=int, default=c.steps)
    p.add_argument("--eval-every", type=int, default=c.eval_every, help="measure every N steps")
    p.add_argument("--batch-size", type=int, default=c.batch_size)
    p.add_argument("--context-len", type=int, default=None, help="default: the model's context")
    p.add_argument("--lr", type=float, default=c.lr)
    p.add_argument("--weight-decay", type=float, default=c.weight_decay)
    p.add_argument("--samples", type=int, default=c.measure.samples, help="samples per measure")
    p.add_argument("--gen-tokens", type=int, default=c.measure.gen_tokens)
    p.add_argument("--seed", type=int, default=c.seed)
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    _add_target_args(p)
    _add_output_args(p)
    p.set_defaults(handler=_cmd_persist)


def _cmd_persist(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from likex.pipelines.persist import PersistConfig, run_persistence
    from likex.report.common import fmt_rate

    cfg = PersistConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        context_len=args.context_len,
        lr=args.lr,
        weight_decay=args.weight_decay,
        eval_every=args.eval_every,
        seed=args.seed,
    )
    cfg.measure = replace(cfg.measure, samples=args.samples, gen_tokens=args.gen_tokens)
    result = run_persistence(
        args.model,
        cfg,
        _target_spec(args) if _has_target(args) else None,
        corpus=args.corpus,
        out=args.out,
        device=args.device,
        progress=not args.quiet,
    )
    if args.json:
        _print_json(result)
        return 0
    print(
        f"likex persist: {result['target']} in {args.model}, next-token training on {args.corpus}"
    )
    print("  step   rate, random prompts      rate, real-text prompts   perplexity")
    for row in result["timeline"]:
        rr, rt = row["rate_random"], row["rate_text"]
        print(
            f"  {row['step']:>5}  {fmt_rate(rr['rate'], rr['ci']):<24}  "
            f"{fmt_rate(rt['rate'], rt['ci']):<24}  {row['perplexity']:.1f}"
        )
    n = result["timeline"][0]["rate_random"]
    print(f"  (each rate: {n['sequences']} samples of {n['tokens_per_sequence']} tokens, 95% CI)")
    print(f"  report    {Path(result['run_dir']) / 'persist.md'}")
    return 0


# --- entry point ---------------------------------------------------------------------------

COMMANDS = (
    _add_run,
    _add_train,
    _add_pretrain,
    _add_sweep,
    _add_targets,
    _add_generate,
    _add_eval,
    _add_audit,
    _add_audit_bench,
    _add_persist,
)


def build_parser() -> argparse.ArgumentParser:
    from likex import __version__

    parser = _Parser(prog="likex", description=__doc__)
    parser.add_argument("--version", action="version", version=f"likex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


# config fields whose flag is not the field's name
_FIELD_FLAGS = {"top_findings": "--top"}


def main(argv: Sequence[str] | None = None) -> int:
    from likex.distributed import init_from_env, shutdown

    args = build_parser().parse_args(argv)
    try:
        init_from_env()  # joins the process group under torchrun; nothing otherwise
        return args.handler(args)
    except ConfigError as e:  # the library names the config field; the user knows the flag
        flag = _FIELD_FLAGS.get(e.field, "--" + e.field.replace("_", "-"))
        sys.stderr.write(f"likex: error: {flag} {e.message}\n")
        return 2
    except LikexError as e:
        sys.stderr.write(f"likex: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("likex: interrupted\n")
        return 130
    finally:
        shutdown()
