"""Settings from YAML, environment and flags; routing by name and glob with bounded labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.catalog import ModelCatalog
from proxy.errors import ModelNotFound
from proxy.routing import Router
from proxy.settings import Settings, load_settings
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


def test_every_setting_has_an_environment_name() -> None:
    """Each field, nested ones included, is read from its ``REFUSAL_GUARD_...`` variable (pydantic-settings)."""
    import json

    from proxy.envsource import from_environment, leaves, variable

    for path, field in leaves(Settings):
        default = field.get_default(call_default_factory=True)
        text = default if isinstance(default, str) else json.dumps(default)
        found = from_environment(Settings, {variable(path): text})
        for key in path:
            assert isinstance(found, dict) and key in found, (variable(path), found)
            found = found[key]
        expected = text if isinstance(default, str) else json.loads(text)
        assert found == expected or json.loads(str(found)) == expected, (path, found)


def test_variables_override_the_file_leaf_by_leaf(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("canary: {interval_seconds: 5, per_round: 3}\naudit: {url: 'sqlite:///a.db'}\n")
    env = {
        "REFUSAL_GUARD_CANARY__INTERVAL_SECONDS": "30",
        "refusal_guard_edge__header_timeout": "3",  # names are not case-sensitive
        "REFUSAL_GUARD_AUDIT__PRIVACY": "hash",
        "REFUSAL_GUARD_CANARY__DEFAULT_POLICY__HARMFUL__H": "90",
        "REFUSAL_GUARD_CLIENT_KEYS": '[{"id": "a", "sha256": "' + "0" * 64 + '"}]',
        "REFUSAL_GUARD_CANARY_SEED": "not a setting",  # a variable the config names, not a field
        "REFUSAL_GUARD_AUDIT": "sqlite:///b.db",  # the shortcut for audit.url
    }
    s = load_settings(cfg, environ=env)
    assert (s.canary.interval_seconds, s.canary.per_round) == (30.0, 3)
    assert s.edge.header_timeout == 3.0 and s.audit.privacy == "hash" and s.audit.url == "sqlite:///b.db"
    assert s.canary.default_policy.harmful.h == 90 and [k.id for k in s.client_keys] == ["a"]
    with pytest.raises(ValueError):
        load_settings(environ={"REFUSAL_GUARD_AUDIT__PRIVACY": "everything"})


def test_the_configuration_reference_is_generated_from_settings() -> None:
    """docs/configuration.md holds the table ``python -m proxy.settings`` prints."""
    from proxy.envsource import reference

    page = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert reference(Settings) in page, "regenerate: python -m proxy.settings"
