"""Settings from YAML, environment and flags; routing by name and glob with bounded labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.catalog import ModelCatalog
from proxy.errors import ModelNotFound
from proxy.routing import Router
from proxy.settings import load_settings
from proxy.upstream import OpenAIUpstream


def test_yaml_env_and_overrides(tmp_path: Path) -> None:
    """The YAML file is read, REFUSAL_GUARD_* variables override it, and flags override both."""
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(
        "port: 9001\nupstreams:\n  - name: vllm\n    base_url: http://127.0.0.1:8000/v1/\n"
        "    api_key_env: VLLM_KEY\n    models: [llama-3-8b, 'qwen*']\n    timeouts: {read: 60}\n"
    )
    s = load_settings(cfg, environ={"REFUSAL_GUARD_PORT": "9002", "REFUSAL_GUARD_DETECTOR": "pattern"})
    assert s.port == 9002 and s.upstreams[0].base_url == "http://127.0.0.1:8000/v1"
    assert s.upstreams[0].timeouts.read == 60
    assert s.upstreams[0].api_key({"VLLM_KEY": "k"}) == "k"
    assert load_settings(cfg, environ={"REFUSAL_GUARD_PORT": "9002"}, overrides={"port": 9003}).port == 9003


def test_upstream_shortcut_from_env() -> None:
    """REFUSAL_GUARD_UPSTREAM is the one-upstream shortcut."""
    s = load_settings(environ={"REFUSAL_GUARD_UPSTREAM": "http://127.0.0.1:11434/v1"})
    assert [(u.name, u.base_url, u.models) for u in s.upstreams] == [("default", "http://127.0.0.1:11434/v1", ("*",))]


@pytest.mark.parametrize(
    "yaml_text",
    [
        "upstreams: [{name: a, base_url: 'ftp://x'}]",
        "upstreams: [{name: a, base_url: 'http://x'}, {name: a, base_url: 'http://y'}]",
        "upstreams: [{name: 'bad name!', base_url: 'http://x'}]",
        "unknown_key: 1",
        "- just a list",
    ],
)
def test_bad_config_is_rejected(tmp_path: Path, yaml_text: str) -> None:
    """Bad URLs, duplicate or odd names, unknown keys and a non-mapping file are refused."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ValueError):
        load_settings(cfg, environ={})


def test_routing_exact_before_glob_and_bounded_labels() -> None:
    """Exact names win over globs; a glob match is labelled by its pattern unless the upstream lists the name."""
    s = load_settings(
        environ={},
        overrides={
            "upstreams": [
                {"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["gpt-*"]},
                {"name": "b", "base_url": "http://127.0.0.1:2/v1", "models": ["gpt-4o", "llama*"]},
            ]
        },
    )
    catalog = ModelCatalog([OpenAIUpstream(u) for u in s.upstreams])
    router = Router(catalog, cache_size=8)
    assert (router.resolve("gpt-4o").upstream.name, router.resolve("gpt-4o").label) == ("b", "gpt-4o")
    assert (router.resolve("gpt-3.5").upstream.name, router.resolve("gpt-3.5").label) == ("a", "gpt-*")
    labels = {router.resolve(f"llama-{i}").label for i in range(1000)}
    assert labels == {"llama*"}
    catalog.learn("b", ["llama-7"])
    assert router.resolve("llama-7").label == "llama-7"
    with pytest.raises(ModelNotFound):
        router.resolve("claude")
    assert len(router._cache) <= 8
