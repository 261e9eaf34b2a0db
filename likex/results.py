"""Typed results: what each command returns, with ``to_json()`` (the keys its ``--json`` output
and its result file have) and ``describe()`` (the lines a person reads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from likex.audit.predicates import Predicate
from likex.audit.words import WORD_AUDITS, word_audit_lines
from likex.evaluate import Evaluation
from likex.stats import PowerAnalysis, fmt_rate


@dataclass
class TargetsResult:
    """The tokens a target spec selects from one vocabulary."""

    target: str
    n_tokens: int
    vocab_size: int
    examples: list[dict]
    # a word target: each entry's variants as token texts (start set above = first tokens)
    words: list[dict]

    @property
    def fraction(self) -> float:
        return self.n_tokens / self.vocab_size

    def to_json(self) -> dict:
        return {**asdict(self), "fraction": self.fraction}

    def describe(self) -> str:
        lines = [
            f"{self.target}: {self.n_tokens} of {self.vocab_size} tokens ({self.fraction:.2%})"
        ]
        if self.examples:
            lines.append("examples: " + ", ".join(repr(e["text"]) for e in self.examples))
        for w in self.words:
            forms = " | ".join("".join(v) for v in w["variants"][:4])
            split = ", ".join("+".join(repr(t) for t in v) for v in w["variants"][:2])
            lines.append(f"word {w['entry']!r}: {forms} (tokens {split})")
        return "\n".join(lines)


@dataclass
class GenerateResult:
    prompt: str
    samples: list[str]
    tokens: list[list[int]]

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if len(self.samples) == 1:
            return self.prompt + self.samples[0]
        return "\n".join(
            f"--- sample {i}\n{self.prompt}{text}" for i, text in enumerate(self.samples, 1)
        )


@dataclass
class EvalResult:
    """likex eval: a saved model's rates and side effects against its reference."""

    model: str
    reference: str | None
    corpus: str | None
    like: str
    n_target_tokens: int
    evaluation: Evaluation = field(repr=False)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "reference": self.reference,
            "corpus": self.corpus,
            "like": self.like,
            "n_target_tokens": self.n_target_tokens,
            **self.evaluation.to_dict(),
            "evaluation": self.evaluation.describe(),
        }

    def describe(self) -> str:
        return "\n".join(
            [f"{self.like} in {self.model}:"] + [f"  {line}" for line in self.evaluation.describe()]
        )


def _rate_line(r: dict, key: str, samples_key: str) -> str:
    return f"{fmt_rate(r[key], r[key + '_ci'])}  n={r[samples_key]}"


@dataclass
class RunResult:
    """A training run (run, train) as result.json holds it."""

    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        r = self.data
        n = r["gen_tokens"]
        lines = [
            f"likex {r['command']}: {r['like']} ({r['n_target_tokens']} of {r['vocab_size']} "
            "tokens)",
            f"  model     {model_label(r)} on {r['device']}",
            f"  loss      {r['loss_first']:.4f} -> {r['loss_last']:.4f} in {r['steps']} steps "
            f"({r['train_seconds']:.1f} s)",
            f"  seed's count (first {n}-token sample): before {r['x_before']}/{n}, "
            f"after {r['x_after']}/{n}",
            f"  rate on {r['prompts']} prompts, {n}-token samples (95% CI):",
            f"    before {_rate_line(r, 'rate_before', 'samples_before')}",
            f"    after  {_rate_line(r, 'rate_after', 'samples')}",
        ]
        # the first evaluation line repeats the random-prompt rate
        lines += [f"  {line}" for line in r.get("evaluation", [])[1:]]
        lines.append(f"  report    {Path(r['run_dir']) / 'report.md'}")
        return "\n".join(lines)


@dataclass
class PretrainResult:
    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        r = self.data
        return "\n".join(
            [
                f"likex pretrain: {model_label(r)} on corpus {r['corpus']}, {r['device']}",
                f"  loss      {r['loss_first']:.4f} -> {r['loss_last']:.4f} in {r['steps']} "
                f"steps ({r['train_seconds']:.1f} s)",
                f"  held-out perplexity {r['ppl_before']:.1f} -> {r['ppl_after']:.1f} "
                f"({r['heldout_tokens']:,} tokens)",
                f"  sample    {r['sample_prompt']!r} -> {r['sample_after']!r}",
                f"  report    {Path(r['run_dir']) / 'report.md'}",
            ]
        )


@dataclass
class SweepResult:
    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        s = self.data
        lines = [f"likex sweep: {s['like']}, mode {s['mode']}, from {s['init']}"]
        for r in s["rows"]:
            rate = fmt_rate(r["rate_text"], r["rate_text_ci"])
            lines.append(
                f"  {r['strength']:<6g} rate on real text {rate}"
                f"  perplexity {r['ppl_change']:+.1%}  KL {r['kl_to_reference']:.4f}"
            )
        lines.append(f"  table     {Path(s['sweep_dir']) / 'sweep.md'}")
        return "\n".join(lines)


@dataclass
class PersistResult:
    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        r = self.data
        lines = [
            f"likex persist: {r['target']} in {r['model']}, next-token training on {r['corpus']}",
            "  step   rate, random prompts      rate, real-text prompts   perplexity",
        ]
        for row in r["timeline"]:
            rr, rt = row["rate_random"], row["rate_text"]
            lines.append(
                f"  {row['step']:>5}  {fmt_rate(rr['rate'], rr['ci']):<24}  "
                f"{fmt_rate(rt['rate'], rt['ci']):<24}  {row['perplexity']:.1f}"
            )
        n = r["timeline"][0]["rate_random"]
        lines.append(
            f"  (each rate: {n['sequences']} samples of {n['tokens_per_sequence']} tokens, 95% CI)"
        )
        lines.append(f"  report    {Path(r['run_dir']) / 'persist.md'}")
        return "\n".join(lines)


@dataclass
class AuditResult:
    """A white-box or black-box audit as audit.json holds it."""

    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        r = self.data
        if r["audit"] in WORD_AUDITS:
            lines = word_audit_lines(r)
        else:
            lines = _white_box_lines(r) if r["audit"] == "white-box" else _black_box_lines(r)
        if "report" in r:
            lines.append(f"  report    {r['report']}")
        return "\n".join(lines)


def _white_box_lines(r: dict) -> list[str]:
    verdict = "bias detected" if r["detected"] else "no bias detected"
    lines = [
        f"likex audit (white-box): {r['model']} against {r['reference']}",
        f"  probes    {r['n_probes']} contexts ({r['probes']}); {r['n_boosted']} tokens boosted "
        f"(centred mean log-ratio > {r['boost_threshold']:.2f})",
        f"  verdict   {verdict} (needs F1 >= {r['f1_threshold']:g})",
    ]
    for i, f in enumerate(r["findings"], 1):
        phrase = Predicate.from_pattern(f["pattern"]).noun_phrase()
        lines.append(
            f"  {i}. {phrase} ({f['n_tokens']} tokens), F1 {f['f1']:.2f} "
            f"(precision {f['precision']:.2f}, recall {f['recall']:.2f}); probability mass "
            f"{f['mass_ref']:.3f} -> {f['mass_model']:.3f}"
        )
    top = ", ".join(
        f"{t['text']!r} {t['log_ratio']:+.1f}+-{t['spread']:.1f}" for t in r["boosted_tokens"][:8]
    )
    lines.append(f"  most boosted (mean log-ratio +- sd): {top}")
    return lines


def _black_box_lines(r: dict) -> list[str]:
    lines = [
        f"likex audit (black-box): {r['model']} against {r['baseline']}",
        f"  samples   {r['suspect_samples']} ({r['suspect_tokens']} tokens) vs "
        f"{r['baseline_samples']} ({r['baseline_tokens']} tokens)",
        f"  tests     {r['n_tests']} predicates, {r['n_significant']} significant at family-wise "
        f"alpha {r['alpha']:g} (Holm)",
    ]
    for i, f in enumerate(r["findings"], 1):
        mark = "*" if f["significant"] else " "
        lines.append(
            f"  {mark}{i}. {f['predicate']}: {f['rate_suspect']:.4f} vs {f['rate_baseline']:.4f} "
            f"(log ratio {f['log_rate_ratio']:+.2f}), z {f['z']:+.1f}, p {f['p_value']:.2g}"
        )
    lines.append(f"  power     {PowerAnalysis.from_dict(r['power']).describe()}")
    return lines


@dataclass
class BenchResult:
    """likex audit-bench as audit_bench.json holds it."""

    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        r = self.data
        lines = [
            f"likex audit-bench: planted {', '.join(r['planted'])}",
            "  strength   cases  white-box named            black-box named",
        ]
        for row in r["table"]:
            w, b = row["white"], row["black"]
            lines.append(
                f"  {row['strength']:<9} {row['cases']:>5}  {w['hits']:>3}/{w['n']:<3} "
                f"{fmt_rate(w['rate'], w['ci'], digits=2)}  {b['hits']:>3}/{b['n']:<3} "
                f"{fmt_rate(b['rate'], b['ci'], digits=2)}"
            )
        lines.append("  (control rows: controls falsely flagged)")
        pw = r["power_0.006_to_0.05"]
        simulated = (pw["simulated_power"], pw["simulated_power_ci"])
        lines.append(f"  power     {PowerAnalysis.from_dict(pw).describe(simulated)}")
        lines.append(f"  report    {Path(r['run_dir']) / 'audit_bench.md'}")
        return "\n".join(lines)


def model_label(r: dict) -> str:
    """ "preset `cpu` (... parameters, init `course`)" or "the model in DIR (...)"."""
    start = f"preset `{r['preset']}`" if r.get("preset") else f"the model in `{r['init']}`"
    return f"{start} ({r['params']:,} parameters, init `{r['weight_init']}`)"
