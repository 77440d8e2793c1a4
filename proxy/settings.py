"""Configuration: read once, at the edge, into frozen objects.

Sources, lowest precedence first: built-in defaults, a YAML file (``--config`` or
``REFUSAL_GUARD_CONFIG``), environment variables (every field has one, :mod:`proxy.envsource`),
then command-line flags. This module is the one reader of the environment (``tests/unit/test_layout.py``):
the variables the config *names* (a secret never sits in a config file), and those that pass settings
to workers and libraries. Every field: ``deploy/guard.example.yaml`` and ``docs/configuration.md``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.envsource import PREFIX as ENV_PREFIX
from proxy.envsource import from_environment, merge, reference
from proxy.paths import DEFAULT_PASSTHROUGH
from proxy.watch_settings import (
    DispositionSettings,
    DriftDesign,
    FingerprintSettings,
    JudgeSettings,
    ModelPolicy,
    ShiftSettings,
)


def is_glob(name: str) -> bool:
    """True for a model pattern (``meta-llama/*``), false for a model name.

    >>> is_glob("qwen-*"), is_glob("qwen2.5-7b")
    (True, False)
    """
    return any(c in name for c in "*?[")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def variable(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of the variable a setting names (a secret, a salt, a key); None when unset or empty."""
    return ((os.environ if environ is None else environ).get(name) or None) if name else None


class Timeouts(_Frozen):
    """Seconds. ``read`` bounds the wait for each chunk, so a long stream is fine while it moves."""

    connect: float = 5.0
    read: float = 300.0
    write: float = 30.0
    pool: float = 5.0
    # how long an idle pooled connection is kept: below the 5 s after which uvicorn (vLLM, TGI's
    # router is similar) closes idle connections, so the proxy rarely reuses one being closed
    keepalive: float = 4.0


class UpstreamConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str = ""
    provider: Literal["openai", "litellm"] = "openai"
    api_key_env: str | None = None
    # how the upstream key goes out: "auto" is `x-api-key` on Anthropic's /v1/messages paths (Anthropic,
    # llama.cpp) and `Authorization: Bearer` elsewhere; vLLM wants "authorization" on every path
    key_header: Literal["auto", "authorization", "x-api-key"] = "auto"
    models: tuple[str, ...] = ("*",)
    timeouts: Timeouts = Timeouts()
    # litellm only: the litellm model string; "{model}" is replaced by the requested model
    litellm_model: str = "{model}"

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The upstream key, read from the variable the config names; never logged."""
        return variable(self.api_key_env, environ)

    def serves(self, model: str) -> str | None:
        """The configured model pattern that matches ``model``, or None."""
        for pattern in self.models:
            if pattern == model:
                return pattern
        for pattern in self.models:
            if is_glob(pattern) and fnmatch.fnmatchcase(model, pattern):
                return pattern
        return None


class ClientKey(_Frozen):
    """An accepted client key, stored as its SHA-256 hex digest; ``id`` is what logs and audit show."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


class CanarySettings(_Frozen):
    """Canaries: where they run, how often, how they look, and how drift is judged."""

    enabled: bool = True
    interval_seconds: float = 60.0
    per_round: int = 2  # canaries per suite and model per interval, on average (a Poisson process)
    models: tuple[str, ...] = ()  # default: every model named in the config or listed by a glob upstream
    suites: tuple[Literal["harmful", "benign"], ...] = ("harmful", "benign")  # extra_suites for your own
    extra_suites: tuple[str, ...] = ()  # paths of private suites (YAML or JSONL)
    templates: tuple[str, ...] = ("{prompt}",)  # wordings; "{prompt}" is replaced
    # each canary is a variant of its prompt drawn from a secret seed (proxy.canary.variants), so no
    # lookup of the public data sets finds it; the seed is read from this variable (unset: a new one
    # per process). `variants: false` sends the suites' prompts as they are.
    variants: bool = True
    variant_seed_env: str = "REFUSAL_GUARD_CANARY_SEED"
    system_prompt: str | None = None  # default: production's own; one production never sends is a tell
    harmful: DriftDesign = DriftDesign()
    benign: DriftDesign = DriftDesign()
    policies: dict[str, ModelPolicy] = {}
    default_policy: ModelPolicy = ModelPolicy()
    auto_release: bool = True  # lift a quarantine once canaries recover (an operator can always clear it)
    alertmanager_url: str | None = None
    webhook_url: str | None = None
    seed: int | None = None

    def policy(self, model: str) -> ModelPolicy:
        return self.policies.get(model, self.default_policy)

    def variant_seed(self, environ: Mapping[str, str] | None = None) -> bytes | None:
        """The secret seed of canary variants, from the variable the config names; None when unset."""
        value = variable(self.variant_seed_env, environ)
        return value.encode() if value else None

    def design(self, model: str, suite: str) -> DriftDesign:
        override = getattr(self.policy(model), suite, None) if suite in ("harmful", "benign") else None
        return override or (self.harmful if suite == "harmful" else self.benign)


class AuditSettings(_Frozen):
    """The audit log: where records go, how durable, how private, and for how long."""

    enabled: bool = True
    # sqlite:///relative, sqlite:////absolute, postgresql://..., jsonl:///path, jsonl://-
    url: str = "sqlite:///var/audit.db"
    durability: Literal["default", "strict"] = "default"  # strict: a response completes once its record is committed
    privacy: Literal["full", "redact", "hash", "metadata"] = "full"
    redact_patterns: tuple[str, ...] = ()  # extra regexes, on top of emails, phone numbers and key-like strings
    hash_salt_env: str = "REFUSAL_GUARD_AUDIT_SALT"  # privacy: hash salts content with this variable's value
    spool_path: str | None = None  # default: beside the SQLite file, or ./var/audit-spool.jsonl
    retention_days: float | None = None
    queue_size: int = 100_000
    batch_size: int = 256
    flush_seconds: float = 0.2  # a batch is written at least this often: the most a crash can lose by default
    retry_seconds: float = 2.0  # how often a down sink is retried (records spool meanwhile)
    checkpoint_seconds: float = 30.0  # how often the chain head goes to the log stream

    def hash_salt(self, environ: Mapping[str, str] | None = None) -> str:
        """The salt for ``privacy: hash``, read from the variable the config names; never logged."""
        return variable(self.hash_salt_env, environ) or ""


class StateSettings(_Frozen):
    """The store every replica and worker shares (:mod:`proxy.state`); unset url: ``proxy.state.location``."""

    url: str | None = Field(default=None, pattern=r"^(postgresql://|postgres://|sqlite:///|memory://)")
    sync_seconds: float = Field(default=1.0, gt=0, le=5)  # how often each replica publishes and reads
    lease_seconds: float = Field(default=6.0, ge=2, le=60)  # the canary leader's lease
    timeout_seconds: float = Field(default=5.0, gt=0)  # per store call


class OtelSettings(_Frozen):
    """OpenTelemetry GenAI traces (:mod:`proxy.telemetry`, the ``otel`` extra): off unless a collector is set."""

    endpoint: str | None = None  # the OTLP collector, e.g. http://127.0.0.1:4318 (http) or :4317 (grpc)
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    headers_env: str | None = None  # a variable holding OTLP headers, "k=v,k2=v2" (an API key, say)
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # of traces the client did not sample already
    capture_content: bool = False  # prompts and answers on spans; never more than audit.privacy keeps
    service_name: str = "refusal-guard"

    def collector(self, environ: Mapping[str, str] | None = None) -> str | None:
        """``endpoint``, else the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``_ENDPOINT``."""
        env = os.environ if environ is None else environ
        return self.endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")

    def headers(self, environ: Mapping[str, str] | None = None) -> str | None:
        return variable(self.headers_env, environ)

    def latest(self, environ: Mapping[str, str] | None = None) -> bool:  # the latest GenAI names only
        opt_in = (os.environ if environ is None else environ).get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
        return "gen_ai_latest_experimental" in opt_in.split(",")


class EdgeSettings(_Frozen):
    """Limits at the proxy's edge, as strict as nginx's or Apache's defaults (:mod:`proxy.edge`)."""

    max_header_bytes: int = Field(default=64 * 1024, ge=1024)  # request line and headers; past it 431
    max_headers: int = Field(default=100, ge=8)  # header fields; past it 431
    header_timeout: float = Field(default=20.0, gt=0)  # from connection or first byte to the end of headers: 408
    body_timeout: float = Field(default=20.0, gt=0)  # no body byte for this long: 408
    body_min_rate: float = Field(default=500.0, ge=0)  # bytes/s: after body_timeout, each 500 bytes buy 1 s more
    keepalive_timeout: float = Field(default=5.0, gt=0)  # an idle kept-alive client connection is closed
    max_audit_header_chars: int = Field(default=8 * 1024, ge=256)  # of headers kept in an audit record


class Settings(_Frozen):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(default=1, ge=1, le=64)  # >1: see proxy.workers
    upstreams: tuple[UpstreamConfig, ...] = ()
    client_keys: tuple[ClientKey, ...] = ()
    detector: str = "delex-lr"
    passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH  # see DEFAULT_PASSTHROUGH
    max_body_bytes: int = 4 * 1024 * 1024
    max_response_bytes: int = 64 * 1024 * 1024  # a larger non-streamed upstream answer is a 502
    # names that carry production traffic under a glob become labels and canary targets: at most this
    # many per upstream (0: none), each after this many answered requests (proxy.catalog)
    learned_models_cap: int = Field(default=16, ge=0, le=1000)
    learn_model_after: int = Field(default=3, ge=1)
    classify_queue_size: int = 10_000
    classify_batch_size: int = 64
    log_level: str = "info"
    readiness_cache_seconds: float = 2.0
    canary: CanarySettings = CanarySettings()
    audit: AuditSettings = AuditSettings()
    shift: ShiftSettings = ShiftSettings()
    state: StateSettings = StateSettings()
    otel: OtelSettings = OtelSettings()
    fingerprint: FingerprintSettings = FingerprintSettings()
    disposition: DispositionSettings = DispositionSettings()
    judge: JudgeSettings = JudgeSettings()
    edge: EdgeSettings = EdgeSettings()
    # prometheus-client multiprocess mode (several workers): where every process writes its samples
    metrics_dir: str | None = None
    admin_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("upstreams")
    @classmethod
    def _unique_names(cls, v: tuple[UpstreamConfig, ...]) -> tuple[UpstreamConfig, ...]:
        names = [u.name for u in v]
        if len(names) != len(set(names)):
            raise ValueError("upstream names must be unique")
        for u in v:
            if u.provider == "openai" and not u.base_url.startswith(("http://", "https://")):
                raise ValueError(f"upstream {u.name!r}: base_url must be an http(s) URL")
        return v

    @property
    def configured_models(self) -> list[str]:
        """Every model name or pattern in the config, in order, without repeats."""
        return list(dict.fromkeys(m for u in self.upstreams for m in u.models))


SHORTCUTS = ("CONFIG", "AUDIT", "STATE", "UPSTREAM", "UPSTREAM_API_KEY_ENV", "WORKER_SETTINGS")  # not fields


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge defaults, the YAML file, ``REFUSAL_GUARD_*`` variables (every field has one:
    :mod:`proxy.envsource`) and ``overrides`` (command-line flags).

    Shortcuts: ``REFUSAL_GUARD_UPSTREAM=URL`` (or ``overrides={"upstream": URL}``) is one upstream
    named ``default`` serving every model; ``REFUSAL_GUARD_AUDIT`` and ``REFUSAL_GUARD_STATE`` are the
    audit and state-store URLs.

    >>> load_settings(environ={}, overrides={"upstream": "http://127.0.0.1:8000/v1"}).upstreams[0].name
    'default'
    """
    env = os.environ if environ is None else environ
    path = path or env.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping")
        data.update(loaded)
    data = merge(data, from_environment(Settings, env, skip=SHORTCUTS))
    over = dict(overrides or {})
    for section in ("audit", "state"):
        url = over.pop(section, None) or env.get(ENV_PREFIX + section.upper())
        if url:
            data[section] = {**data.get(section, {}), "url": url}
    upstream = over.pop("upstream", None) or env.get(ENV_PREFIX + "UPSTREAM")
    key_env = over.pop("upstream_api_key_env", None) or env.get(ENV_PREFIX + "UPSTREAM_API_KEY_ENV")
    if upstream:
        data["upstreams"] = [{"name": "default", "base_url": upstream, "api_key_env": key_env}]
    data.update({k: v for k, v in over.items() if v is not None})
    return Settings.model_validate(data)


# -- variables that carry settings to other processes and libraries --------------------------------

WORKER_SETTINGS_ENV = ENV_PREFIX + "WORKER_SETTINGS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it in each process at import


def multiproc_dir() -> str | None:
    """A metrics directory already set for this process tree (by an operator or a parent)."""
    return os.environ.get(MULTIPROC_ENV) or None


def export_worker_env(settings_file: Path, metrics_dir: Path) -> None:
    """For the worker processes uvicorn spawns: where their settings are, where metrics go."""
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    os.environ[WORKER_SETTINGS_ENV] = str(settings_file)


def worker_settings() -> Settings:
    """In a worker process: the settings its parent wrote (see :func:`export_worker_env`)."""
    return Settings.model_validate_json(Path(os.environ[WORKER_SETTINGS_ENV]).read_bytes())


def prepare_litellm() -> None:
    """Before litellm is imported: never let it fetch its cost map from the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


if __name__ == "__main__":  # python -m proxy.settings: the table in docs/configuration.md
    print(reference(Settings), end="")
