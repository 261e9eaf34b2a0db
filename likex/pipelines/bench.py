"""``likex audit-bench``: build the reference, draw the predicates to plant, make the run
folder (config.json), run the benchmark (likex.audit.bench), and write audit_bench.json
and its report."""

from __future__ import annotations

import time

from likex.audit.bench import draw_predicates, reference_model, run_bench, summarise
from likex.audit.predicates import PredicateIndex, check_vocab
from likex.audit.results import BenchResult
from likex.config_audit import BenchCommand
from likex.device import resolve_device
from likex.io import atomic_write_json, check_new_dir
from likex.models.tokenizer import gpt2
from likex.report.bench import write_bench_report
from likex.runs import RunLock, new_run_dir, write_config

BENCH_FILE = "audit_bench.json"


def run_bench_command(command: BenchCommand, progress: bool = True) -> BenchResult:
    """Run the benchmark ``command.bench`` describes into the new folder ``command.out``
    (default runs/<timestamp>) and return its result. The config, the reference and the
    predicate pool are checked before the folder is made."""
    cfg, out, device, keep_models = command.bench, command.out, command.device, command.keep_models
    cfg.validate()
    if out is not None:
        check_new_dir(out)  # before the reference is built, not after
    reference = reference_model(cfg, resolve_device(device))
    token_strings = gpt2().token_strings()
    check_vocab(reference, token_strings, "the reference")
    t_start = time.perf_counter()
    planted = draw_predicates(PredicateIndex.of(token_strings), cfg)
    out_dir = new_run_dir(out)
    with RunLock(out_dir, fresh=True):
        doc = {"command": "audit-bench", "bench": cfg.to_dict()}
        doc["planted"] = [p.to_pattern() for p in planted]
        write_config(out_dir, doc, next(reference.parameters()).device, cfg.seed)
        cases = run_bench(cfg, reference, token_strings, planted, out_dir, keep_models, progress)
        summary = summarise(cfg, cases, planted)
        result = BenchResult(summary, time.perf_counter() - t_start, out_dir, cfg)
        atomic_write_json(out_dir / BENCH_FILE, result.to_json())
        write_bench_report(out_dir, result)
    return result
