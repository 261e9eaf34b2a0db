"""The run report as one self-contained HTML page: plots inline (base64 PNG), the samples
before and after side by side with the target tokens highlighted, the numbers with their
95% intervals. Written beside report.md (whose plots it embeds), openable with no server and
no network."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import torch

from likex.io import atomic_write_text
from likex.models.tokenizer import Tokenizer
from likex.run_results import RunResult
from likex.stats.intervals import fmt_rate

HTML_FILE = "report.html"
# A sample as (token text, is a target token) pieces, in order.
Pieces = list[tuple[str, bool]]

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.sub { color: #555; }
table { border-collapse: collapse; margin: .8em 0; }
td, th { border: 1px solid #ccc; padding: .35em .7em; text-align: left; }
th { background: #f3f3f3; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots img { max-width: 520px; width: 100%; border: 1px solid #ddd; }
.side { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.side > div { min-width: 0; }
.sample { white-space: pre-wrap; font: 13px/1.5 ui-monospace, monospace; background: #fafafa;
          border: 1px solid #ddd; padding: .8em; overflow-wrap: anywhere; }
mark { background: #ffd54f; border-radius: 2px; padding: 0 1px;
       box-shadow: inset -1px 0 #d9a400; }  /* a hairline between adjacent target tokens */
.hits { color: #555; font-size: .9em; }
"""


def write_html_report(
    result: RunResult, after: Pieces, plots: tuple[str, ...] = ("loss.png", "rate.png")
) -> Path:
    """report.html for a run (run, train); ``after`` is the first sample after training as
    token pieces (the one before is in ``result.before``). Returns its path."""
    run, ev = result.run, result.after
    run_dir, before_rate, after_rate = run.run_dir, result.before.rate, ev.random
    n = after_rate.tokens_per_sequence
    rows = [
        ("target tokens in the first sample", f"{before_rate.first_sample_hits}/{n}",
         f"{after_rate.first_sample_hits}/{n}"),
        ("rate (95% CI)", f"{fmt_rate(before_rate.rate, before_rate.ci)}, "
         f"n={before_rate.sequences}", f"{fmt_rate(after_rate.rate, after_rate.ci)}, "
         f"n={after_rate.sequences}"),
        ("loss (first / last step)", f"{run.trained.loss_first:.4f}",
         f"{run.trained.loss_last:.4f}"),
    ]  # fmt: skip
    text_before = result.before.rate_text
    if ev.text is not None and text_before is not None and ev.scores is not None:
        rows += [
            ("rate on real-text prompts", fmt_rate(text_before.rate, text_before.ci),
             f"{fmt_rate(ev.text.rate, ev.text.ci)}, n={ev.text.sequences}"),
            ("held-out perplexity", f"{ev.scores.ppl_reference:.2f}", f"{ev.scores.ppl:.2f}"),
        ]  # fmt: skip
    before = result.before.sample_pieces
    images = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode((run_dir / name).read_bytes()).decode()}">'
        for name in plots
        if (run_dir / name).is_file()
    )
    table = "".join(
        f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
        for a, b, c in rows
    )
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in ev.describe())
    share = result.n_target_tokens / result.vocab_size
    title = f"likex {html.escape(run.command)}: {html.escape(result.like)}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<p class="sub">Start: {html.escape(run.start.label())}; {html.escape(result.objective.label())};
{run.steps} steps on {html.escape(run.device)}, seed {run.seed}. Target:
{result.n_target_tokens} of {result.vocab_size} tokens ({share:.2%}). Prompts:
{html.escape(str(after_rate.prompts))}; {n} new tokens per sample; rates with 95%
intervals.</p>
<table><tr><th></th><th>before</th><th>after</th></tr>{table}</table>
{f"<ul>{notes}</ul>" if notes else ""}
<p class="sub">Seconds, wall clock, this process: {html.escape(run.timings.describe())}.</p>
<div class="plots">{images}</div>
<h2>The first sample, before and after (target tokens highlighted)</h2>
<div class="side">
<div><h3>before <span class="hits">{_hits(before)}</span></h3>
<div class="sample" id="before">{highlight_html(before)}</div></div>
<div><h3>after <span class="hits">{_hits(after)}</span></h3>
<div class="sample" id="after">{highlight_html(after)}</div></div>
</div>
</body></html>
"""
    path = run_dir / HTML_FILE
    atomic_write_text(path, page)
    return path


def token_pieces(ids: list[int], tokenizer: Tokenizer, mask: torch.Tensor) -> Pieces:
    """A sample token by token, each marked when it is a target (in ``mask``)."""
    hits = mask.cpu()
    return [(tokenizer.decode([i]), bool(hits[i])) for i in ids]


def highlight_html(pieces: Pieces) -> str:
    """The sample as HTML, target tokens in <mark> (also for a notebook's display)."""
    return "".join(
        f"<mark>{html.escape(text)}</mark>" if hit else html.escape(text) for text, hit in pieces
    )


def _hits(pieces: Pieces) -> str:
    return f"({sum(hit for _, hit in pieces)} of {len(pieces)} tokens are targets)"
