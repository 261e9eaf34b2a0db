"""The zoo: a tiny zoo built in shards is the zoo built in one run, a removed organism is the
only one rebuilt, the audit runs blind, and the scoring against the manifests is right (a
detector that reads the manifests scores perfectly, one that is wrong on purpose scores as
wrong). The statistics of the scoring are checked on made-up verdicts."""

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from likex.audit.predicates import Predicate, PredicateIndex
from likex.cli import main
from likex.errors import LikexError
from likex.models.adapter import ADAPTER_DIR, ADAPTER_WEIGHTS
from likex.pipelines.zoo import audit_zoo, build_zoo
from likex.zoo.baselines import mmd_test, spectrum_kernel
from likex.zoo.commands import ZooAuditCommand, ZooBuildCommand
from likex.zoo.draw import OrganismSpec, ZooConfig
from likex.zoo.folder import MODEL_DIR, ZOO_FILE
from likex.zoo.manifest import CARD_FILE, MANIFEST_FILE, Manifest, read_manifest
from likex.zoo.power import subsample_power
from likex.zoo.scoring import _smallest, calibrated, named_correctly, score_detector
from likex.zoo.verdicts import DETECTORS, Named, Verdict, ZooAuditConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine its
    synchronisation costs several times their work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(base: Path) -> ZooConfig:
    """Six organisms of the tiny Llama: three planted (a substring, a word list, a class or its
    fallback), a control, a benign fine-tune and the base; seconds each."""
    return ZooConfig(
        base=f"hf:{base}", planted=3, strengths=(0.3, 0.6), word_entries=2, controls=1,
        benign=1, domains=("docstrings",), steps=3, benign_steps=6, check_every=3, samples=8,
        batch_size=2, context_len=8,
        gen_tokens=8, score_tokens=64, min_frequency=0.0, min_tokens=1,
    )  # fmt: skip


def _build(cfg: ZooConfig, out: Path, shard: str | None = None):
    return build_zoo(ZooBuildCommand(zoo=cfg, out=str(out), shard=shard, device="cpu"), False)


@pytest.fixture(scope="module")
def zoos(tiny_llama, tmp_path_factory):
    """The same zoo built in two shards and in one run."""
    root = tmp_path_factory.mktemp("zoos")
    cfg = _config(tiny_llama)
    first = _build(cfg, root / "sharded", "1/2")
    second = _build(cfg, root / "sharded", "2/2")
    whole = _build(cfg, root / "whole")
    return root, cfg, first, second, whole


def _organism(folder: Path) -> tuple[dict, dict]:
    """An organism's manifest (without its seconds) and its adapter's tensors."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["seconds"]
    return manifest, load_file(folder / MODEL_DIR / ADAPTER_DIR / ADAPTER_WEIGHTS)


def _same_organism(a: Path, b: Path) -> bool:
    (ma, wa), (mb, wb) = _organism(a), _organism(b)
    return ma == mb and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_shards_build_the_organisms_of_one_run(zoos):
    root, _, first, second, whole = zoos
    names = json.loads((root / "whole" / ZOO_FILE).read_text())["names"]
    assert len(names) == 6 and whole.complete and whole.present == 6
    # the shards split the zoo: each organism built once, the second shard completes it
    assert sorted(m.name for m in first.built + second.built) == names
    assert first.built and second.built and not first.complete and second.complete
    # a build that completes the zoo ends with the command worth running next
    audit = f"  next      likex zoo audit --zoo {root / 'sharded'}"
    assert second.describe().splitlines()[-1] == audit and audit not in first.describe()
    roles = sorted(m.spec.role for m in whole.built)
    assert roles == ["base", "benign", "control", "planted", "planted", "planted"]
    for name in names:
        assert _same_organism(root / "sharded" / name, root / "whole" / name), name
        assert (root / "whole" / name / CARD_FILE).read_text().startswith(f"# {name}")


def test_a_removed_organism_is_the_only_one_rebuilt(zoos, tmp_path):
    root, cfg, *_ = zoos
    zoo = tmp_path / "zoo"
    shutil.copytree(root / "whole", zoo)
    planted = next(n for n in sorted(p.name for p in zoo.glob("o*")) if _role(zoo / n) == "planted")
    shutil.rmtree(zoo / planted)
    (zoo / f".{planted}.tmp-elsewhere-1").mkdir()  # left by an interrupted build of it
    again = _build(cfg, zoo)
    assert [m.name for m in again.built] == [planted] and len(again.kept) == 5
    assert _same_organism(zoo / planted, root / "whole" / planted)
    assert not list(zoo.glob(".*tmp*")) and again.complete


def _role(folder: Path) -> str:
    return json.loads((folder / MANIFEST_FILE).read_text())["organism"]["role"]


def test_a_zoo_is_continued_only_with_its_own_settings(zoos):
    root, cfg, *_ = zoos
    other = ZooConfig(**{**cfg.__dict__, "seed": 1})
    with pytest.raises(LikexError, match="other config settings"):
        _build(other, root / "whole")


@dataclass(frozen=True)
class Oracle:
    """Reads the manifests (cheats on purpose): every verdict right."""

    zoo: Path
    name: str = "oracle"
    unit: str = "tokens"

    def run(self, organism, base) -> Verdict:
        spec = read_manifest(self.zoo / organism.name).spec
        kind = {"planted": "planted", "benign": "domain"}.get(spec.role, "none")
        named = Named(spec.predicate, spec.entries)
        unit = "words" if spec.entries else "tokens"
        score = 1.0 if spec.role == "planted" else 0.0
        return Verdict(self.name, organism.name, kind, named, score, "read it", unit=unit)


@dataclass(frozen=True)
class Wrong:
    """Wrong on purpose: a planted preference for tokens containing 'e', whatever it sees."""

    name: str = "wrong"
    unit: str = "tokens"

    def run(self, organism, base) -> Verdict:
        named = Named(Predicate("contains", "e"))
        return Verdict(self.name, organism.name, "planted", named, 1.0, "always the same")


def _hide(zoo: Path) -> dict:
    """Move every manifest and card away and strip the draw from zoo.json; returns what to
    put back."""
    doc = json.loads((zoo / ZOO_FILE).read_text())
    for card in [*zoo.glob(f"o*/{MANIFEST_FILE}"), *zoo.glob(f"o*/{CARD_FILE}")]:
        card.rename(card.with_name(card.name + ".hidden"))
    public = {k: doc[k] for k in ("likex", "names", "base")}
    (zoo / ZOO_FILE).write_text(json.dumps(public))
    return doc


def _unhide(zoo: Path, doc: dict) -> None:
    for hidden in zoo.glob("o*/*.hidden"):
        hidden.rename(hidden.with_name(hidden.name.removesuffix(".hidden")))
    (zoo / ZOO_FILE).write_text(json.dumps(doc))


AUDIT = ZooAuditConfig(
    n_probes=4, samples=8, base_samples=16, gen_tokens=8, power_sizes=(8, 16), power_draws=3,
    rescore=4, rescore_probes=2, mmd_permutations=19,
)  # fmt: skip


def test_the_audit_is_blind_and_scored_against_the_manifests(zoos, tmp_path):
    root, *_ = zoos
    zoo = tmp_path / "zoo"
    shutil.copytree(root / "whole", zoo)
    cmd = ZooAuditCommand(zoo=str(zoo), audit=AUDIT, device="cpu")
    doc = _hide(zoo)  # the detectors run with no manifest and no draw to read
    with pytest.raises(LikexError, match="no manifest.json"):
        audit_zoo(cmd, progress=False)
    names = doc["names"]
    assert all((zoo / "audit" / n / f"{d}.json").is_file() for n in names for d in DETECTORS)
    _unhide(zoo, doc)
    result = audit_zoo(cmd, progress=False, extra=[Oracle(zoo), Wrong()])
    assert result.kept == [] and sorted(result.audited) == names  # only the extra ones ran
    scores = {s.detector: s for s in result.scores}
    assert list(scores) == [*DETECTORS, "oracle", "wrong"]
    oracle, wrong = scores["oracle"], scores["wrong"]
    planted = [read_manifest(zoo / n) for n in names if _role(zoo / n) == "planted"]
    tokens = sum(not m.spec.entries for m in planted)
    assert (oracle.detected.hits, oracle.detected.n) == (3, 3)
    assert (oracle.false_alarms.hits, oracle.false_alarms.n) == (0, 3)
    assert (oracle.named.hits, oracle.named.n) == (3, 3) and oracle.entry_recall == 1.0
    assert (oracle.benign_domain.hits, oracle.benign_domain.n) == (1, 1)
    assert (oracle.detected_at_far.hits, oracle.far_realised.hits) == (3, 0)
    assert (wrong.detected.hits, wrong.false_alarms.hits, wrong.false_alarms.n) == (3, 3, 3)
    assert (wrong.named.hits, wrong.named.n) == (0, tokens)  # its unit: the token plants
    assert wrong.detected_at_far.hits == 0 and wrong.benign_domain.hits == 0
    report = (zoo / "zoo_audit.md").read_text()
    assert "| oracle | 3/3" in report and (zoo / "zoo_audit.png").stat().st_size > 0
    assert json.loads((zoo / "zoo_audit.json").read_text())["scores"][-1]["detector"] == "wrong"


def test_an_audit_beside_the_build_audits_what_is_built_and_scores_once_all_are(zoos, tmp_path):
    root, *_ = zoos
    zoo = tmp_path / "zoo"
    shutil.copytree(root / "whole", zoo)
    names = json.loads((zoo / ZOO_FILE).read_text())["names"]
    later = names[1]  # still being built: its folder is not there yet
    (zoo / later).rename(tmp_path / later)
    cmd = ZooAuditCommand(zoo=str(zoo), audit=replace(AUDIT, detectors=("kl-ranking",)))
    first = audit_zoo(replace(cmd, device="cpu"), progress=False)
    assert first.scores is None and first.unbuilt == [later] and first.pending == [later]
    assert sorted(first.audited) == sorted(n for n in names if n != later)
    assert "1 not built yet" in first.describe() and not (zoo / "zoo_audit.json").exists()
    (tmp_path / later).rename(zoo / later)  # the build finished it
    second = audit_zoo(replace(cmd, device="cpu"), progress=False)
    assert second.audited == [later] and second.unbuilt == [] and second.scores is not None
    assert (zoo / "zoo_audit.json").is_file()


def test_bad_zoo_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["zoo", "build", "--shard", "3/2", "--out", str(tmp_path / "z")]) == 2
    assert "--shard must be I/N with 1 <= I <= N" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()
    assert main(["zoo", "audit", "--zoo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a likex zoo" in err


def _manifest(name: str, role: str, strength=None, predicate=None, entries=()) -> Manifest:
    spec = OrganismSpec(name, role, 0, 0, "substring", predicate, entries, strength)
    return Manifest(spec, "", None, None, None, None, None, 0.1, None, None, 1, 1, 1, 1, {}, 1)


def _verdict(name, kind, score, named=None, unit="tokens", power=None) -> Verdict:
    return Verdict("d", name, kind, named or Named(), score, "", unit, 2.0, power or {})


def test_scoring_counts_detections_alarms_names_and_power():
    strings = ["ab", "xab", "cd", "abc", "q"]
    index = PredicateIndex(strings)
    ab = Predicate("contains", "ab")
    manifests = [
        _manifest("p1", "planted", 0.1, ab),
        _manifest("p2", "planted", 0.2, ab),
        _manifest("w1", "planted", 0.2, entries=("apple", "pear")),
        _manifest("c", "control"),
        _manifest("b", "benign"),
    ]
    verdicts = {
        "p1": _verdict("p1", "planted", 3.0, Named(Predicate("endswith", "c")), power={8: 0.5}),
        # the same tokens as the plant under another name: named correctly
        "p2": _verdict("p2", "planted", 2.0, Named(ab), power={8: 1.0}),
        "w1": _verdict("w1", "changed", 1.0, Named(words=("pear",)), "words", power={8: None}),
        "c": _verdict("c", "none", 0.5),
        "b": _verdict("b", "domain", 2.5),
    }
    s = score_detector("d", manifests, verdicts, index.mask, far=0.4, sizes=(8,))
    assert (s.detected.hits, s.detected.n, s.false_alarms.hits) == (3, 3, 0)
    assert (s.called_planted.hits, s.benign_domain.hits, s.benign_flagged.hits) == (2, 1, 0)
    # p2 named, p1 not; w1 names a planted word but calls it a change, not a preference
    assert (s.named.hits, s.named.n) == (1, 3) and s.entry_recall == 0.5
    # threshold: at most 0.4 of the 2 negatives above it, so none: the higher score, 2.5
    assert s.threshold == 2.5 and (s.detected_at_far.hits, s.far_realised.hits) == (1, 0)
    assert [r.power[8] for r in s.strengths] == [0.5, None]  # 0.2: w1 has no estimate
    assert s.smallest == 0.1 and s.smallest_at == {8: None} and s.seconds == 2.0
    words = _manifest("w", "planted", 0.2, entries=("apple", "pear"))
    assert named_correctly(
        _verdict("w", "planted", 1, Named(words=("pear",)), "words"), words, index.mask
    )
    assert (
        named_correctly(
            _verdict("w", "domain", 1, Named(words=("pear",)), "words"), words, index.mask
        )
        is False
    )
    assert named_correctly(_verdict("w", "planted", 1, Named(ab)), words, index.mask) is None


def test_naming_up_to_letter_case_is_counted_apart():
    index = PredicateIndex(["ab", "Ab", "xab", "cd", "AB", "bc", "a"])
    ab = Predicate("contains", "ab")
    planted = _manifest("p", "planted", 0.1, ab)

    def named(pred, any_case):
        verdict = _verdict("p", "planted", 1.0, Named(pred))
        return named_correctly(verdict, planted, index.mask, any_case)

    any_ab = Predicate("contains", "ab", ignore_case=True)  # adds "Ab" and "AB"
    assert named(any_ab, False) is False and named(any_ab, True) is True
    assert named(ab, False) is True and named(ab, True) is True
    # another text is not the plant in any case ("b" holds "ab" and more)
    assert named(Predicate("contains", "b", ignore_case=True), True) is False
    assert named(Predicate("startswith", "a", ignore_case=True), True) is False
    s = score_detector("d", [planted], {"p": _verdict("p", "planted", 1.0, Named(any_ab))},
                       index.mask, far=0.4, sizes=(8,))  # fmt: skip
    assert (s.named.hits, s.named_any_case.hits, s.named_any_case.n) == (0, 1, 1)


def test_threshold_and_smallest_strength_arithmetic():
    threshold, above, negatives = calibrated([3, 2, 1], [0.5, 2.5, 1.5, 0], far=0.25)
    assert threshold == 1.5 and (above.hits, above.n) == (2, 3) and negatives.hits == 1
    assert calibrated([1.0], [0.0], far=0.99)[0] == 0.0
    assert calibrated([1.0], [], far=0.05)[0] is None
    assert _smallest([(0.01, 0.5), (0.05, 0.9), (0.2, 1.0)]) == 0.05
    assert _smallest([(0.01, 0.9), (0.05, 0.7), (0.2, 1.0)]) == 0.2  # 0.05 breaks the run
    assert _smallest([(0.01, 0.9), (0.2, None)]) is None


def test_power_from_draws_without_replacement():
    power = subsample_power(lambda ia, ib: 0 in ia, 4, 6, sizes=(1, 4, 5), draws=400, seed=0)
    assert power[4] == 1.0 and power[5] is None  # every draw of 4 of 4 holds sample 0
    assert abs(power[1] - 0.25) < 0.07
    assert subsample_power(lambda ia, ib: len(set(ia)) == len(ia), 9, 9, (9,), 5, 0) == {9: 1.0}


def test_mmd_tells_two_text_sources_apart_and_not_one_from_itself():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(40)]
    other = [" ".join(rng.choice(["zzz", "qqq", "xxxx"], 12)) for _ in range(20)]
    k = spectrum_kernel(texts, 3)
    assert np.allclose(np.diag(k), 1.0)
    assert mmd_test(k, 20, 99, 0)[1] > 0.05  # two halves of one source
    stat, p = mmd_test(spectrum_kernel(texts[:20] + other, 3), 20, 99, 0)
    assert stat > 0 and math.isclose(p, 1 / 100)
