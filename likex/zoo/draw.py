"""What a zoo holds: its settings (``ZooConfig``) and the seeded draw of its organisms.

The draw is the secret the auditors never see. Planted organisms take the strengths and the
predicate families in turn: a token *substring* (tokens containing, starting or ending with
2-3 characters), a character *class* (capitalised words, digits, ...) or a list of *words* the
base already writes (drawn from its own samples). A token set is drawn from the base's
vocabulary by its frequency in an installed text (the builtin corpus): at least
``min_frequency`` (the base writes it) and at most half the strength (so every plant at least
doubles the set's rate); a word list likewise by its words' rate in the base's samples.
Negatives: controls trained toward the base itself (tilt 0), benign fine-tunes on a text
domain stopped at the KL of a planted organism, and the base itself (an adapter that changes
nothing). The organisms are shuffled and named o00, o01, ... so a name says nothing; each
belongs to a shard group (a planted organism with the benign ones matched to its KL), and
groups are dealt to shards in turn.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import regex

from likex.audit.predicates import CHAR_CLASSES, Predicate, PredicateIndex, predicate_from_key
from likex.audit.words import text_units
from likex.config import parse_floats
from likex.data import check_seed
from likex.errors import ConfigError, LikexError
from likex.models.gpt import WEIGHT_INITS
from likex.objective import NextToken, Objective, Rate, Tilt
from likex.options import option
from likex.target import TargetSpec
from likex.zoo.texts import DOMAINS

FAMILIES = ("substring", "words", "class")
ROLES = ("planted", "control", "benign", "base")
NEGATIVE_ROLES = ("control", "benign", "base")


def parse_names(text: str) -> tuple[str, ...]:
    """ "a,b" -> ("a", "b")."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass(frozen=True)
class ZooConfig:
    """the zoo: its base model and the seeded draw of its organisms"""

    base: str = option(
        "smollm2-135m",
        "the base every organism is made from: a named model, hf:NAME_OR_PATH, a model folder, "
        "or scratch (a fresh --preset model)",
        metavar="NAME|hf:NAME|DIR|scratch",
    )
    preset: str = option("cpu", "model preset of a scratch base")
    weight_init: str = option("gpt2", "weights of a scratch base", choices=WEIGHT_INITS)
    seed: int = option(0, "seeds the draw, every organism's training and its measurements")
    planted: int = option(25, "planted organisms (the strengths and the families in turn)")
    strengths: tuple[float, ...] = option(
        (0.01, 0.02, 0.05, 0.1, 0.2),
        "comma-separated requested rates of the planted organisms (word lists: word rates)",
        parse=parse_floats,
    )
    families: tuple[str, ...] = option(
        FAMILIES,
        "comma-separated predicate families: substring (tokens containing, starting or ending "
        "with 2-3 characters), words (a list of words the base writes), class (a character "
        "class: capitalised words, digits, ...)",
        parse=parse_names,
    )
    word_entries: int = option(4, "entries of a planted word list")
    controls: int = option(3, "negatives trained toward the base itself (tilt 0)")
    benign: int = option(
        4, "negatives fine-tuned on a text domain, stopped at a planted organism's KL"
    )
    domains: tuple[str, ...] = option(
        DOMAINS,
        "comma-separated texts of the benign negatives: docstrings (the standard library's), "
        "pydoc (Python's documentation topics)",
        parse=parse_names,
    )
    steps: int = option(30, "training steps of a planted organism or a control")
    benign_steps: int = option(300, "most next-token steps of a benign negative")
    check_every: int = option(5, "benign negatives: held-out KL checked every N steps")
    batch_size: int | None = option(
        None, "contexts per step; default: the base's (a pretrained model: 4)"
    )
    context_len: int | None = option(
        None, "training window; default: the base's (a pretrained model: 64)"
    )
    lr: float | None = option(
        None, "learning rate; default: the base's for an adapter (a pretrained model: 1e-3)"
    )
    samples: int = option(
        32, "samples measuring each organism's reached rate (and drawing the base's words)"
    )
    gen_tokens: int = option(64, "new tokens per sample")
    score_tokens: int = option(2048, "held-out tokens scoring each organism's KL and floor")
    min_frequency: float = option(5e-4, "least text frequency of a drawn set", cli=False)
    min_tokens: int = option(10, "fewest tokens of a drawn substring predicate", cli=False)
    max_tokens: int = option(3000, "most tokens of a drawn substring predicate", cli=False)
    # what the audits' thresholds were developed on ('x': likex run, 'z': the tests)
    exclude: tuple[str, ...] = option(("x", "z"), "strings no drawn predicate mentions", cli=False)

    def validate(self) -> None:
        check_seed(self.seed)
        for name in ("planted", "controls", "benign"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must be >= 0")
        for name in ("word_entries", "steps", "benign_steps", "check_every", "gen_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.samples < 4:
            raise ConfigError("samples", f"must be at least 4, got {self.samples}")
        if self.score_tokens < 16:
            raise ConfigError("score_tokens", f"must be at least 16, got {self.score_tokens}")
        if self.planted + self.controls + self.benign == 0:
            raise ConfigError("planted", "a zoo needs at least one trained organism")
        bad = [s for s in self.strengths if not 0 < s < 1]
        if not self.strengths or bad or len(set(self.strengths)) != len(self.strengths):
            raise ConfigError("strengths", "must be distinct rates in (0, 1)")
        _check_names("families", self.families, FAMILIES, self.planted > 0)
        _check_names("domains", self.domains, DOMAINS, self.benign > 0)
        if self.benign and not self.planted:
            raise ConfigError("benign", "needs a planted organism whose KL it is stopped at")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ZooConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _check_names(field_name: str, names: tuple[str, ...], allowed: tuple, needed: bool) -> None:
    unknown = [n for n in names if n not in allowed]
    if unknown or len(set(names)) != len(names) or (needed and not names):
        raise ConfigError(field_name, f"must be distinct names from {', '.join(allowed)}")


@dataclass(frozen=True)
class OrganismSpec:
    """One organism as drawn: its role, what is planted (a predicate or word entries) and how
    strongly, a benign one's text and the organism whose KL it is stopped at, its seed, and
    its shard group."""

    name: str
    role: str
    seed: int
    group: int = 0
    family: str | None = None
    predicate: Predicate | None = None
    entries: tuple[str, ...] = ()
    strength: float | None = None
    domain: str | None = None
    match: str | None = None

    def target_spec(self) -> TargetSpec | None:
        """The target of its training (a control's: the set its tilt-0 target is built on,
        which leaves the base's distribution as it is)."""
        p = self.predicate
        if self.entries:
            return TargetSpec(words=self.entries)
        if p is None:
            return None
        if p.kind == "class":
            return TargetSpec(regex=CHAR_CLASSES[p.text][2])
        if p.kind == "contains":
            return TargetSpec(like=p.text, ignore_case=p.ignore_case)
        text = regex.escape(p.text)
        pattern = rf"\A{text}" if p.kind == "startswith" else rf"{text}\Z"
        return TargetSpec(regex=pattern, ignore_case=p.ignore_case)

    def objective(self) -> Objective | None:
        if self.role == "planted":
            return Rate(self.strength)
        if self.role == "control":
            return Tilt(0.0)
        return NextToken() if self.role == "benign" else None

    def describe(self) -> str:
        """What was planted, in words."""
        if self.role == "planted":
            what = (
                f"the words {', '.join(map(repr, self.entries))}"
                if self.entries
                else self.predicate.noun_phrase()
            )
            return f"{what} at rate {self.strength:g}"
        if self.role == "control":
            return "trained toward the base itself (tilt 0)"
        if self.role == "benign":
            return f"next-token fine-tune on {self.domain}, stopped at the KL of {self.match}"
        return "the base itself, unchanged"

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "predicate"}
        d["entries"] = list(self.entries)
        d["predicate"] = None if self.predicate is None else self.predicate.to_pattern()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> OrganismSpec:
        pattern = d.get("predicate")
        return cls(
            **{k: v for k, v in d.items() if k not in ("predicate", "entries")},
            predicate=None if pattern is None else Predicate.from_pattern(pattern),
            entries=tuple(d.get("entries") or ()),
        )


@dataclass
class _Pools:
    """What the draw picks from: token sets by their text frequency, the base's words."""

    cfg: ZooConfig
    index: PredicateIndex
    freq: np.ndarray  # each token's frequency in the installed text
    words: Counter  # the base's words in its samples
    rng: random.Random
    substrings: list[str] = field(default_factory=list)
    shares: dict[str, float] = field(default_factory=dict)
    used: set = field(default_factory=set)

    def share(self, key: str) -> float:
        if key not in self.shares:
            mask = self.index.mask(predicate_from_key(key)).numpy()
            self.shares[key] = float(self.freq[mask].sum())
        return self.shares[key]

    def fits(self, key: str, strength: float) -> bool:
        return self.cfg.min_frequency <= self.share(key) <= strength / 2

    def substring(self, strength: float) -> Predicate | None:
        for key in self.substrings:
            if key not in self.used and self.fits(key, strength):
                self.used.add(key)
                return predicate_from_key(key)
        return None

    def char_class(self, strength: float) -> Predicate | None:
        names = [n for n in sorted(CHAR_CLASSES) if ("#" + n, strength) not in self.used]
        self.rng.shuffle(names)
        for name in names:
            if self.fits("#" + name, strength):  # a class may return at another strength
                self.used.add(("#" + name, strength))
                return Predicate("class", name)
        return None

    def word_list(self, strength: float) -> tuple[str, ...]:
        total = sum(self.words.values())
        eligible = sorted(
            w for w in self.words if w.isalpha() and len(w) >= 4 and ("w", w) not in self.used
        )
        self.rng.shuffle(eligible)
        chosen: list[str] = []
        for w in eligible:
            if sum(self.words[c] for c in [*chosen, w]) / total <= strength / 2:
                chosen.append(w)
            if len(chosen) == self.cfg.word_entries:
                break
        self.used |= {("w", w) for w in chosen}
        return tuple(chosen)


def _substring_keys(index: PredicateIndex, cfg: ZooConfig) -> list[str]:
    """Case-sensitive predicates on 2-3 characters selecting min..max tokens, none mentioning
    an excluded string, sorted (then shuffled by the draw)."""
    banned = [e.lower() for e in cfg.exclude]
    return sorted(
        key
        for key, n in index.counts.items()
        if key[0] in "cse"
        and 2 <= len(key) - 1 <= 3
        and cfg.min_tokens <= n <= cfg.max_tokens
        and key[1:].strip()
        and not any(b in key[1:].lower() for b in banned)
    )


def _plant(pools: _Pools, family: str, strength: float) -> tuple[str, Predicate | None, tuple]:
    """(family, predicate, entries) of one planted organism; a family with nothing eligible at
    this strength falls back to a substring."""
    if family == "words":
        entries = pools.word_list(strength)
        if entries:
            return "words", None, entries
    if family == "class":
        found = pools.char_class(strength)
        if found is not None:
            return "class", found, ()
    found = pools.substring(strength)
    if found is None:
        raise LikexError(
            f"no token set of the base's vocabulary has a text frequency between "
            f"{pools.cfg.min_frequency:g} and {strength / 2:g} (half the strength {strength:g})"
        )
    return "substring", found, ()


def _seed(seed: int, k: int) -> int:
    state = np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & 0x3FFF_FFFF_FFFF_FFFF


def draw_organisms(
    cfg: ZooConfig, index: PredicateIndex, text_ids: np.ndarray, base_texts: list[str]
) -> list[OrganismSpec]:
    """The zoo's organisms, named and grouped: ``text_ids`` the installed text in the base's
    tokens (the frequency of token sets), ``base_texts`` the base's own samples (its words)."""
    cfg.validate()
    rng = random.Random(cfg.seed)
    freq = np.bincount(text_ids, minlength=len(index.token_strings)) / max(1, len(text_ids))
    words = Counter(u for t in base_texts for u in text_units(t))
    pools = _Pools(cfg, index, freq, words, rng)
    pools.substrings = _substring_keys(index, cfg)
    rng.shuffle(pools.substrings)
    specs: list[dict] = []
    n_strengths = len(cfg.strengths)
    for k in range(cfg.planted):
        strength = cfg.strengths[k % n_strengths]
        family = cfg.families[(k // n_strengths) % len(cfg.families)]
        family, pred, entries = _plant(pools, family, strength)
        specs.append(dict(role="planted", family=family, predicate=pred, entries=entries,
                          strength=strength))  # fmt: skip
    for _ in range(cfg.controls):
        pred = pools.substring(1.0)
        if pred is None:
            raise LikexError("no token set of the vocabulary is left for a control's target")
        specs.append(dict(role="control", family="substring", predicate=pred))
    planted = [i for i, s in enumerate(specs) if s["role"] == "planted"]
    middle = sorted(cfg.strengths)[n_strengths // 2]  # benign KLs: of the middle strengths up
    matchable = [i for i in planted if specs[i]["strength"] >= middle] or planted
    for j in range(cfg.benign):
        specs.append(dict(role="benign", domain=cfg.domains[j % len(cfg.domains)],
                          match=rng.choice(matchable)))  # fmt: skip
    specs.append(dict(role="base"))
    return _named(specs, rng, cfg.seed)


def _named(specs: list[dict], rng: random.Random, seed: int) -> list[OrganismSpec]:
    """Shuffled, named o00, o01, ... in the shuffled order, each with its seed and shard group
    (a benign organism in its match's group); in name order."""
    order = list(range(len(specs)))
    rng.shuffle(order)
    width = max(2, len(str(len(specs) - 1)))
    names = {k: f"o{rank:0{width}d}" for rank, k in enumerate(order)}
    owner = {k: s["match"] if s.get("match") is not None else k for k, s in enumerate(specs)}
    groups = sorted(set(owner.values()), key=lambda k: names[k])
    group_of = {k: groups.index(owner[k]) for k in range(len(specs))}
    out = []
    for k in sorted(range(len(specs)), key=lambda k: names[k]):
        s = dict(specs[k])
        if s.get("match") is not None:
            s["match"] = names[s["match"]]
        out.append(OrganismSpec(name=names[k], seed=_seed(seed, k), group=group_of[k], **s))
    return out


def in_shard(spec: OrganismSpec, shard: tuple[int, int]) -> bool:
    """Whether ``spec`` belongs to shard i of n (1-based): groups are dealt in turn."""
    i, n = shard
    return spec.group % n == i - 1
