"""The configs of ``likex zoo build`` and ``likex zoo audit``, and the detectors by name."""

from __future__ import annotations

from dataclasses import dataclass

from likex.errors import ConfigError
from likex.models.adapter import AdapterConfig
from likex.options import option
from likex.zoo.baselines import MMD, KLRanking
from likex.zoo.detectors import BlackBox, BlackBoxWords, WhiteBox, WhiteBoxWords
from likex.zoo.draw import ZooConfig
from likex.zoo.folder import parse_shard
from likex.zoo.suspects import Detector
from likex.zoo.verdicts import ZooAuditConfig

DEVICE_HELP = "auto (cuda > mps > cpu), cpu, cuda[:N], mps"
SHARD_HELP = (
    "only shard I of N (1-based, e.g. $SLURM_ARRAY_TASK_ID/8 in a Slurm array --array=1-8); "
    "default: every shard in turn"
)


@dataclass(frozen=True)
class ZooBuildCommand:
    """likex zoo build: plant preferences of drawn strengths in copies of a base model (LoRA
    adapters by default), beside negatives (tilt-0 controls, benign fine-tunes stopped at a
    planted organism's KL, the base itself); each organism's folder holds its model and its
    manifest (manifest.json and a model card, README.md), which the auditors never read. The
    zoo's seed and settings (zoo.json) rebuild it; an interrupted build continues where it
    stopped, and shards build into the same folder."""

    zoo: ZooConfig = option(factory=ZooConfig, help="the zoo")
    adapter: AdapterConfig = option(
        factory=lambda: AdapterConfig(adapter="lora"), help="adapter of each organism"
    )
    out: str = option("zoo", "the zoo folder (an unfinished zoo there is continued)", metavar="DIR")
    shard: str | None = option(None, SHARD_HELP, metavar="I/N")
    device: str = option("auto", DEVICE_HELP)

    def validate(self) -> None:
        self.zoo.validate()
        self.adapter.check()
        if self.adapter.merge:
            raise ConfigError("merge", "does not apply to a zoo (its organisms stay adapters)")
        parse_shard(self.shard)


@dataclass(frozen=True)
class ZooAuditCommand:
    """likex zoo audit: run every detector blind on every organism of a zoo (it sees each
    organism's model and the base, never the draw or a manifest), then score the verdicts
    against the manifests: detection, false alarms on the negatives, naming, benign fine-tunes
    told apart, detection by strength and KL, power at several sample counts. Writes
    zoo_audit.json, zoo_audit.md and zoo_audit.png into the zoo; an interrupted audit continues
    where it stopped, shards audit into the same folder, and an audit run beside the build
    audits the organisms built so far (run it again for the rest)."""

    zoo: str = option(help="the zoo folder (likex zoo build)", metavar="DIR")
    audit: ZooAuditConfig = option(factory=ZooAuditConfig, help="detectors")
    shard: str | None = option(None, SHARD_HELP, metavar="I/N")
    device: str = option("auto", DEVICE_HELP)

    def validate(self) -> None:
        self.audit.validate()
        parse_shard(self.shard)


DETECTOR_TYPES = {
    "white-box": WhiteBox,
    "white-box-words": WhiteBoxWords,
    "black-box": BlackBox,
    "black-box-words": BlackBoxWords,
    "kl-ranking": KLRanking,
    "mmd": MMD,
}


def make_detectors(cfg: ZooAuditConfig) -> list[Detector]:
    """The detectors ``cfg`` names, in its order."""
    return [DETECTOR_TYPES[name](cfg) for name in cfg.detectors]
