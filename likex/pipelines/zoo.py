"""``likex zoo build`` and ``likex zoo audit``: a zoo folder made organism by organism, then
audited blind and scored against its manifests.

A zoo folder::

    zoo.json            the settings, the base, the texts' checksums and the draw (secret);
                        its "names" and "base" are all an audit reads of it
    o00/ o01/ ...       one per organism: model/ (a LoRA adapter, or a whole model),
                        manifest.json and README.md (secret), each folder renamed into place whole
    audit/config.json   the audit's settings (a resumed or sharded audit must use the same)
    audit/base_samples.json, audit/oNN/samples.json, audit/oNN/<detector>.json
    zoo_audit.json, zoo_audit.md, zoo_audit.png   the table and the curves, once complete

Both commands work on their shard's organisms only, skip what is there already, and print a
line per organism with the time left; run again, they continue where they stopped. An audit
may run beside the build: it audits the organisms built so far and leaves the others for its
next run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from likex.audit.predicates import PredicateIndex
from likex.device import resolve_device
from likex.errors import LikexError
from likex.io import atomic_write_json
from likex.models.hf import token_strings_for
from likex.models.start import Scratch, Start, parse_start, start_from_record
from likex.report.zoo import write_zoo_report
from likex.runs import versions
from likex.zoo.commands import ZooAuditCommand, ZooBuildCommand, make_detectors
from likex.zoo.draw import OrganismSpec, draw_organisms, in_shard
from likex.zoo.folder import (
    AUDIT_DIR,
    MODEL_DIR,
    ZOO_FILE,
    Progress,
    clear_stale,
    organism_folder,
    parse_shard,
    publish_once,
    read_json,
)
from likex.zoo.manifest import MANIFEST_FILE, Manifest, read_manifest
from likex.zoo.organisms import Workshop, build_organism, open_workshop
from likex.zoo.results import AUDIT_REPORT, ZooAuditResult, ZooBuildResult
from likex.zoo.scoring import score_zoo
from likex.zoo.suspects import AuditBase, Detector, Suspect
from likex.zoo.texts import domain_text, text_sha256
from likex.zoo.verdicts import Named, Verdict

AUDIT_CONFIG = "config.json"
AUDIT_FILE = "zoo_audit.json"


def _texts(domains: list[str]) -> dict[str, str]:
    """The checksums of the texts a zoo trains on."""
    return {name: text_sha256(domain_text(name)) for name in ("pydoc", *domains)}


def _zoo_doc(ws: Workshop, cmd: ZooBuildCommand) -> dict:
    cfg = cmd.zoo
    specs = draw_organisms(cfg, ws.index, ws.train_tokens.numpy(), ws.base_texts)
    return {
        "likex": "zoo",
        "config": cfg.to_dict(),
        "adapter": cmd.adapter.to_dict(),
        "base": ws.start.record(),
        "texts": _texts(list(cfg.domains)),
        "versions": versions(),
        "names": [s.name for s in specs],
        "organisms": [s.to_dict() for s in specs],
    }


def _check_same(doc: dict, cmd: ZooBuildCommand, start: Start, where: Path) -> None:
    """A zoo is continued only with the settings it was drawn with."""
    ours = {"config": cmd.zoo.to_dict(), "adapter": cmd.adapter.to_dict(), "base": start.record()}
    for key, value in ours.items():
        if doc.get(key) != value:
            raise LikexError(
                f"{where} holds a zoo made with other {key} settings: give the same flags "
                "to continue it, or another --out"
            )


def config_hash(doc: dict, spec: OrganismSpec) -> str:
    """What made an organism: the zoo's settings, base and texts, and its own draw."""
    keys = {k: doc[k] for k in ("config", "adapter", "base", "texts")}
    text = json.dumps({**keys, "organism": spec.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _kept(folder: Path, expected: str) -> bool:
    """Whether the organism in ``folder`` is done (its folder exists: folders appear whole),
    made with these settings."""
    if not folder.exists():
        return False
    if read_manifest(folder).config_hash != expected:
        raise LikexError(f"{folder} was built with other settings than the zoo's zoo.json")
    return True


def build_zoo(cmd: ZooBuildCommand, progress: bool = True) -> ZooBuildResult:
    """Build the organisms of ``cmd.shard`` (every shard in turn by default) into ``cmd.out``."""
    t0 = time.perf_counter()
    cmd.validate()
    cfg, shard, zoo_dir = cmd.zoo, parse_shard(cmd.shard), Path(cmd.out)
    if zoo_dir.exists() and not zoo_dir.is_dir():
        raise LikexError(f"{zoo_dir} is a file, not a zoo folder")
    device = resolve_device(cmd.device)
    start = parse_start(cfg.base, Scratch.of(cfg.preset, cfg.weight_init, cfg.seed))
    ws: Workshop | None = None
    if (zoo_dir / ZOO_FILE).is_file():
        _check_same(read_json(zoo_dir / ZOO_FILE), cmd, start, zoo_dir)
    else:
        ws = open_workshop(cfg, cmd.adapter, start, device)
        publish_once(zoo_dir / ZOO_FILE, _zoo_doc(ws, cmd))
    doc = read_json(zoo_dir / ZOO_FILE)  # another job may have been first: its draw holds
    _check_same(doc, cmd, start, zoo_dir)
    specs = [OrganismSpec.from_dict(d) for d in doc["organisms"]]
    # within a group the planted organism comes first: a benign one is stopped at its KL
    mine = [s for s in specs if in_shard(s, shard)]
    mine.sort(key=lambda s: (s.group, s.role == "benign", s.name))
    bar = Progress("zoo build", len(mine), progress)
    built: list[Manifest] = []
    kept: list[str] = []
    for spec in mine:
        folder, expected = zoo_dir / spec.name, config_hash(doc, spec)
        if _kept(folder, expected):
            kept.append(spec.name)
            bar.skip(spec.name)
            continue
        if ws is None:
            ws = open_workshop(cfg, cmd.adapter, start, device)
        if _texts(list(cfg.domains)) != doc["texts"]:
            raise LikexError(f"the texts {zoo_dir} was drawn on have changed (another Python?)")
        clear_stale(folder)
        kl = read_manifest(zoo_dir / spec.match).kl if spec.role == "benign" else None
        with organism_folder(folder) as tmp:
            manifest = build_organism(ws, spec, tmp, expected, kl)
        built.append(manifest)
        bar.step(spec.name, manifest.seconds, spec.describe())
    present = sum((zoo_dir / s.name / MANIFEST_FILE).is_file() for s in specs)
    return ZooBuildResult(
        zoo_dir, shard, built, kept, present, len(specs), time.perf_counter() - t0
    )


def public_view(doc: dict, where: Path) -> tuple[list[str], Start]:
    """What an audit may read of zoo.json: the organisms' names and the base."""
    if doc.get("likex") != "zoo" or "names" not in doc:
        raise LikexError(f"{where} is not a likex zoo (no zoo.json from likex zoo build)")
    return list(doc["names"]), start_from_record(doc["base"], str(where))


def _verdict_path(audit_dir: Path, name: str, detector: str) -> Path:
    return audit_dir / name / f"{detector}.json"


def run_detector(detector: Detector, suspect: Suspect, base: AuditBase) -> Verdict:
    """The detector's verdict, timed: its own seconds plus those of the shared parts it used
    (the organism's model, probes or samples), each counted in full. A detector that cannot
    test what it was given (too few samples, say) finds nothing, and says why."""
    suspect.begin()
    t0 = time.perf_counter()
    try:
        verdict = detector.run(suspect, base)
    except LikexError as e:
        verdict = Verdict(detector.name, suspect.name, "none", Named(), 0.0, f"could not test: {e}")
    own = time.perf_counter() - t0 - suspect.fresh
    unit = verdict.unit or detector.unit
    return replace(verdict, unit=unit, seconds=own + suspect.used_seconds())


def _audit_organisms(
    cmd: ZooAuditCommand,
    detectors: list[Detector],
    names: list[str],
    unbuilt: list[str],
    start: Start,
    progress: bool,
) -> tuple[list[str], list[str], AuditBase | None]:
    """Run every detector that has no verdict yet on the shard's built organisms: (audited,
    kept, the base as the detectors saw it, None where nothing was left to audit)."""
    cfg, (i, n), zoo_dir = cmd.audit, parse_shard(cmd.shard), Path(cmd.zoo)
    audit_dir = zoo_dir / AUDIT_DIR
    mine = [name for k, name in enumerate(names) if k % n == i - 1]
    bar = Progress("zoo audit", len(mine), progress)
    base: AuditBase | None = None
    audited, kept = [], []
    for name in mine:
        if name in unbuilt:
            bar.skip(name, "not built yet, left for the next run")
            continue
        todo = [d for d in detectors if not _verdict_path(audit_dir, name, d.name).is_file()]
        if not todo:
            kept.append(name)
            bar.skip(name)
            continue
        if base is None:
            model, tokenizer = start.load(resolve_device(cmd.device))
            base = AuditBase(model, tokenizer, start.record(), cfg, audit_dir, progress)
        t0 = time.perf_counter()
        suspect = Suspect(name, zoo_dir / name / MODEL_DIR, base, audit_dir / name)
        for detector in todo:
            verdict = run_detector(detector, suspect, base)
            atomic_write_json(_verdict_path(audit_dir, name, detector.name), verdict.to_json())
        audited.append(name)
        bar.step(name, time.perf_counter() - t0)
    return audited, kept, base


def _index(start: Start) -> PredicateIndex:
    """The predicate index of the base's vocabulary (the scoring compares token sets)."""
    model, tokenizer = start.load("cpu")
    return PredicateIndex.of(token_strings_for(model, tokenizer))


def _read_verdicts(
    audit_dir: Path, names: list[str], detectors: list[str]
) -> tuple[dict[tuple[str, str], Verdict], list[str]]:
    verdicts, pending = {}, []
    for name in names:
        for d in detectors:
            path = _verdict_path(audit_dir, name, d)
            if not path.is_file():
                pending.append(name)
                break
            verdicts[name, d] = Verdict.from_json(read_json(path))
    return verdicts, pending


def audit_zoo(
    cmd: ZooAuditCommand, progress: bool = True, extra: Sequence[Detector] = ()
) -> ZooAuditResult:
    """Audit the organisms of ``cmd.shard`` blind; once every organism has every detector's
    verdict, score them against the manifests and write the table, report and plot.
    ``extra``: detectors of the caller's own (likex.zoo.suspects.Detector), run after the
    configured ones and scored the same way."""
    t0 = time.perf_counter()
    cmd.validate()
    cfg, zoo_dir = cmd.audit, Path(cmd.zoo)
    detectors = make_detectors(cfg) + list(extra)
    named = [d.name for d in detectors]
    if len(set(named)) != len(named):
        raise LikexError(f"two detectors share a name: {', '.join(named)}")
    if not (zoo_dir / ZOO_FILE).is_file():
        raise LikexError(f"{zoo_dir} is not a likex zoo (no zoo.json from likex zoo build)")
    names, start = public_view(read_json(zoo_dir / ZOO_FILE), zoo_dir)
    settings = publish_once(zoo_dir / AUDIT_DIR / AUDIT_CONFIG, cfg.to_dict())
    if settings != json.loads(json.dumps(cfg.to_dict())):
        raise LikexError(
            f"{zoo_dir / AUDIT_DIR} holds an audit with other settings: give the same flags, "
            f"or remove {zoo_dir / AUDIT_DIR} to audit afresh"
        )
    # An organism still being built (a build running beside this audit) waits for the next run.
    unbuilt = [name for name in names if not (zoo_dir / name / MODEL_DIR).exists()]
    audited, kept, base = _audit_organisms(cmd, detectors, names, unbuilt, start, progress)
    verdicts, pending = _read_verdicts(zoo_dir / AUDIT_DIR, names, named)
    result = ZooAuditResult(
        zoo=zoo_dir,
        shard=parse_shard(cmd.shard),
        audited=audited,
        kept=kept,
        pending=pending,
        unbuilt=unbuilt,
        organisms=len(names),
        planted=0,
        detectors=named,
        scores=None,
        far=cfg.far,
        sizes=cfg.power_sizes,
        seconds=time.perf_counter() - t0,
    )
    if pending:
        return result
    manifests = [read_manifest(zoo_dir / name) for name in names]  # only now: the scoring
    index = base.index if base is not None else _index(start)
    scores = score_zoo(manifests, verdicts, named, index.mask, cfg.far, cfg.power_sizes)
    planted = sum(m.spec.role == "planted" for m in manifests)
    result = replace(result, scores=scores, planted=planted, report=zoo_dir / AUDIT_REPORT)
    result = replace(result, seconds=time.perf_counter() - t0)
    atomic_write_json(zoo_dir / AUDIT_FILE, result.to_json())
    write_zoo_report(zoo_dir, result, manifests, verdicts)
    return result
