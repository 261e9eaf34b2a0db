"""Two detectors from the field, implemented here as baselines for likex's own audits.

* ``KLRanking`` (model diffing): which tokens gained the most probability at the probe
  contexts, organism minus base, averaged over probes, as model-diffing tools list them. Its
  finding is its ``kl_top`` tokens; its named predicate the one of the white-box audit's space
  (likex.audit.predicates) that best covers them (F1 of the two token sets). It reports a
  change when the mean KL(organism || base) at the probes is at least ``min_kl``: a planted
  preference when its best predicate covers the top tokens (F1 at least ``min_f1``), else a
  domain shift. Score: the KL times that F1 (a large change concentrated on one set).
* ``MMD`` (two-sample testing on samples alone, as in Model Equality Testing): the maximum
  mean discrepancy between the organism's and the base's samples under a character n-gram
  spectrum kernel (each text a vector of its n-gram counts, normalised; the kernel their cosine),
  with a permutation p-value. It names nothing: a significant difference is a change it
  cannot explain. Score: the MMD squared.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from likex.audit.white_box import Candidates
from likex.zoo.power import subsample_power
from likex.zoo.suspects import AuditBase, Suspect
from likex.zoo.verdicts import Named, Verdict, ZooAuditConfig

MIN_SUPPORT = 5  # fewest tokens of a predicate KLRanking may name (the white-box audit's)


@dataclass(frozen=True)
class KLRanking:
    cfg: ZooAuditConfig
    name: str = "kl-ranking"
    unit: str = "tokens"

    def run(self, organism: Suspect, base: AuditBase) -> Verdict:
        cfg = self.cfg
        probes = organism.probes()
        gain = (probes.p_model - probes.p_ref).mean(0)
        top = torch.argsort(gain, descending=True)[: cfg.kl_top]
        chosen = torch.zeros(gain.shape[0], dtype=torch.float64)
        chosen[top] = 1.0
        candidates = Candidates.of(base.index, MIN_SUPPORT)
        overlap = torch.sparse.mm(candidates.membership, chosen[:, None])[:, 0]
        sizes = torch.sparse.sum(candidates.membership, 1).to_dense()
        f1 = 2 * overlap / (sizes + cfg.kl_top)
        best = int(torch.argmax(f1))
        kl = float(probes.kl.mean())
        kind = "none" if kl < cfg.min_kl else "planted" if f1[best] >= cfg.min_f1 else "domain"
        predicate = candidates.predicates[best]
        listed = ", ".join(repr(base.strings[t]) for t in top[:5].tolist())
        note = (
            f"KL {kl:.4f} nats per probe; top tokens {listed}; best cover "
            f"{predicate.describe()} (F1 {float(f1[best]):.2f})"
        )
        named = Named(predicate, tokens=tuple(top.tolist()))
        score = kl * float(f1[best])
        return Verdict(self.name, organism.name, kind, named, score, note)


def spectrum_kernel(texts: list[str], n: int) -> np.ndarray:
    """[len(texts)]^2: the cosine of the texts' character n-gram count vectors (a text shorter
    than n is its own one n-gram)."""
    grams: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        counts = Counter(text[j : j + n] for j in range(max(1, len(text) - n + 1)))
        for gram, c in counts.items():
            rows.append(i)
            cols.append(grams.setdefault(gram, len(grams)))
            vals.append(float(c))
    phi = torch.sparse_coo_tensor(
        torch.tensor([rows, cols]),
        torch.tensor(vals, dtype=torch.float64),
        (len(texts), len(grams)),
        check_invariants=False,  # built from valid indices just above
    ).coalesce()
    with warnings.catch_warnings():  # torch calls its sparse-times-sparse product "beta"
        warnings.simplefilter("ignore", UserWarning)
        k = torch.sparse.mm(phi, phi.t()).to_dense().numpy()
    norm = np.sqrt(np.clip(np.diag(k), 1e-12, None))
    return k / norm[:, None] / norm[None, :]


def mmd_test(k: np.ndarray, n_a: int, permutations: int, seed: int) -> tuple[float, float]:
    """(MMD^2, permutation p-value) of the first ``n_a`` rows of kernel ``k`` against the rest:
    the biased estimate w' K w with w = 1/n_a on one side and -1/n_b on the other, its p-value
    (1 + #{permuted >= observed}) / (1 + permutations)."""
    n = k.shape[0]
    w = np.where(np.arange(n) < n_a, 1.0 / n_a, -1.0 / (n - n_a))
    observed = float(w @ k @ w)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(w) for _ in range(permutations)])
    stats = ((perms @ k) * perms).sum(1)
    return observed, float((1 + (stats >= observed - 1e-12).sum()) / (1 + permutations))


@dataclass(frozen=True)
class MMD:
    cfg: ZooAuditConfig
    name: str = "mmd"
    unit: str = ""  # it names nothing

    def run(self, organism: Suspect, base: AuditBase) -> Verdict:
        cfg = self.cfg
        mine, theirs = organism.texts(), base.texts
        k = spectrum_kernel(mine + theirs, cfg.mmd_ngram)
        stat, p = mmd_test(k, len(mine), cfg.mmd_permutations, cfg.seed)
        kind = "changed" if p < cfg.alpha else "none"
        note = f"MMD^2 {stat:.5f}, permutation p {p:.3f} ({len(mine)} vs {len(theirs)} samples)"
        a = len(mine)

        def detects(ia: np.ndarray, ib: np.ndarray) -> bool:
            rows = np.concatenate([ia, a + ib])
            sub = k[np.ix_(rows, rows)]
            return mmd_test(sub, len(ia), cfg.mmd_permutations, cfg.seed)[1] < cfg.alpha

        power = subsample_power(detects, a, len(theirs), cfg.power_sizes, cfg.power_draws, cfg.seed)
        return Verdict(self.name, organism.name, kind, Named(), stat, note, power=power)
