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
from likex.results import model_label
from likex.stats import fmt_rate

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
    run_dir: str | Path,
    result: dict,
    before: Pieces,
    after: Pieces,
    plots: tuple[str, ...] = ("loss.png", "rate.png"),
) -> Path:
    """report.html for a run (run, train); ``before``/``after`` are the first samples as
    token pieces. Returns its path."""
    run_dir = Path(run_dir)
    r = result
    rows = [
        ("target tokens in the first sample", f"{r['x_before']}/{r['gen_tokens']}",
         f"{r['x_after']}/{r['gen_tokens']}"),
        ("rate (95% CI)", f"{fmt_rate(r['rate_before'], r['rate_before_ci'])}, "
         f"n={r['samples_before']}", f"{fmt_rate(r['rate_after'], r['rate_after_ci'])}, "
         f"n={r['samples']}"),
        ("loss (first / last step)", f"{r['loss_first']:.4f}", f"{r['loss_last']:.4f}"),
    ]  # fmt: skip
    if "rate_text" in r:
        rows += [
            ("rate on real-text prompts",
             fmt_rate(r["rate_text_before"], r["rate_text_before_ci"]),
             f"{fmt_rate(r['rate_text'], r['rate_text_ci'])}, n={r['samples_text']}"),
            ("held-out perplexity", f"{r['ppl_reference']:.2f}", f"{r['ppl']:.2f}"),
        ]  # fmt: skip
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
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in r.get("evaluation", []))
    share = r["n_target_tokens"] / r["vocab_size"]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>likex {html.escape(r.get("command", "run"))}: {html.escape(r["like"])}</title>
<style>{_STYLE}</style></head>
<body>
<h1>likex {html.escape(r.get("command", "run"))}: {html.escape(r["like"])}</h1>
<p class="sub">Start: {html.escape(model_label(r))}; mode {html.escape(str(r.get("mode")))};
{r["steps"]} steps on {html.escape(r["device"])}, seed {r["seed"]}. Target:
{r["n_target_tokens"]} of {r["vocab_size"]} tokens ({share:.2%}). Prompts:
{html.escape(r["prompts"])}; {r["gen_tokens"]} new tokens per sample; rates with 95% Wilson
intervals at the effective sample size.</p>
<table><tr><th></th><th>before</th><th>after</th></tr>{table}</table>
{f"<ul>{notes}</ul>" if notes else ""}
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
