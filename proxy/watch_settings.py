"""The settings of the watch's statistics: canary suites' CUSUM designs, the
production shift test, the disposition watch, the secret judge and the fingerprint. Plain values:
:mod:`proxy.settings` composes them into :class:`~proxy.settings.Settings` and reads the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DriftDesign(Frozen):
    """Bernoulli CUSUM of one suite: in-control failure rate ``p0``, rate to detect fast ``p1``, threshold ``h``."""

    p0: float = 0.10
    p1: float = 0.50
    h: int = 60


class ModelPolicy(Frozen):
    """What happens to a model's traffic when its canaries drift."""

    action: Literal["observe", "quarantine"] = "observe"
    fallback_upstream: str | None = None  # quarantine routes here instead of answering 503
    harmful: DriftDesign | None = None  # per-model overrides of the suite designs
    benign: DriftDesign | None = None


class ShiftSettings(Frozen):
    """The production refusal-rate shift test (:mod:`proxy.shift`): recent window against baseline."""

    bucket_seconds: float = 60.0
    recent_seconds: float = 3600.0
    baseline_seconds: float = 7 * 86400.0
    min_samples: int = 200
    z: float = 4.0
    min_relative: float = 0.5


class DispositionSettings(Frozen):
    """Risk-adjusted refusal CUSUMs on every production answer per model and app: one test per factor
    the refusals above the model's floor fall by, together one false alarm per model per
    ``false_alarm_days``; ``harmful``: ``production_harmful`` among them (the answers to flagged
    requests; it pages and the model's quarantine policy acts on it); ``quarantine``: the policy acts
    on the others too (docs/disposition.md)."""

    enabled: bool = True
    harmful: bool = True
    burn_in: int = Field(default=3000, ge=20)
    burn_in_seconds: float = Field(default=1800.0, ge=0)
    factors: tuple[float, ...] = Field(default=(1.5, 4.0, 16.0), min_length=1)
    # a second CUSUM per factor, in which a cell refused less than this above the floor weighs nothing:
    # a model's refusals of ordinary requests differ between score bands by a point or two, which an
    # abliteration leaves, and expecting them to fall, each ordinary refusal of the largest bands
    # pulled the statistic down (bench/evidence.py); 0: none
    ordinary_spread: float = Field(default=0.05, ge=0, lt=1)
    false_alarm_days: float = Field(default=60.0, gt=0)
    refresh_seconds: float = Field(default=900.0, gt=0)
    memory_days: float = Field(default=0.25, gt=0)
    guard_z: float = Field(default=3.0, gt=0)
    share_seconds: float = Field(default=600.0, gt=0)  # the harmful share's time constant
    max_apps: int = Field(default=16, ge=1)  # apps learnt apart per model; the rest share one
    quarantine: bool = False


class JudgeSettings(Frozen):
    """The secret judge (:mod:`proxy.judging`, the ``judge`` extra; on when installed unless ``enabled``
    says otherwise): ``budget``, the share of one core it may use (the sample ratio follows the load)."""

    enabled: bool | None = None
    budget: float = Field(default=0.1, gt=0, le=1)
    queue: int = Field(default=16, ge=1)  # requests waiting for the judge; past it they are skipped
    secret_env: str = "REFUSAL_GUARD_JUDGE_SECRET"  # else canary.variant_seed_env's; neither: one per process


class FingerprintSettings(Frozen):
    """The served-model fingerprint (:mod:`proxy.fingerprint`): which answers each replica reads for it."""

    enabled: bool = True
    # production answers read per model and second on each replica (canaries: every one); the leader
    # fits the union, so a few a second are plenty and the stage costs nothing on the rest
    production_per_second: float = Field(default=5.0, ge=0)
