"""Every setting has an environment name, read by pydantic-settings: ``REFUSAL_GUARD_<FIELD>``, a
nested field's path joined by ``__`` (``REFUSAL_GUARD_CANARY__INTERVAL_SECONDS=30``), lists and
mappings as JSON (``REFUSAL_GUARD_CLIENT_KEYS='[{"id": "a", "sha256": "..."}]'``). Names are not
case-sensitive. :func:`reference` lists them all (``docs/configuration.md`` holds its output: ``python -m proxy.settings``).

This module never reads the process's environment itself: :func:`proxy.settings.load_settings`
hands it the mapping to read.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

PREFIX = "REFUSAL_GUARD_"
DELIMITER = "__"


def from_environment(model: type[BaseModel], environ: Mapping[str, str], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``model`` that ``environ`` sets, as nested data for ``model.model_validate``
    (values as strings, coerced by the model); names in ``skip`` (after the prefix) are not fields."""
    config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter=DELIMITER, case_sensitive=False, extra="ignore")
    fields = type("FromEnvironment", (BaseSettings, model), {"model_config": config})
    source = EnvSettingsSource(fields)
    dropped = {(PREFIX + name).lower() for name in skip}
    source.env_vars = {k.lower(): v for k, v in environ.items() if k.lower() not in dropped}
    return source()


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mappings merged key by key (a variable sets one leaf, not its section).

    >>> merge({"canary": {"enabled": True, "seed": 1}}, {"canary": {"seed": 2}})
    {'canary': {'enabled': True, 'seed': 2}}
    """
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _section(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (a nested section), if it is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _section(inner[0]) if len(inner) == 1 else None
    return None


def leaves(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every settable field, nested sections walked into: ``(path, field)``."""
    for name, field in model.model_fields.items():
        inner = _section(field.annotation)
        if inner is not None:
            yield from leaves(inner, (*path, name))
        else:
            yield (*path, name), field


def variable(path: tuple[str, ...]) -> str:
    """
    >>> variable(("canary", "interval_seconds"))
    'REFUSAL_GUARD_CANARY__INTERVAL_SECONDS'
    """
    return PREFIX + DELIMITER.join(path).upper()


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return (
        (text or str(annotation))
        .replace("typing.", "")
        .replace("proxy.settings.", "")
        .replace("proxy.watch_settings.", "")
        .replace("__main__.", "")
    )


def reference(model: type[BaseModel]) -> str:
    """A Markdown table of every setting: its YAML path, variable, type and default."""
    rows = ["| setting (YAML path) | environment variable | type | default |", "|---|---|---|---|"]
    for path, field in leaves(model):
        default = field.get_default(call_default_factory=True)
        shown = json.dumps(default.model_dump() if isinstance(default, BaseModel) else default, default=str)
        shown = (shown if len(shown) <= 60 else shown[:57] + "...").replace("|", "\\|")
        kind = _type_name(field.annotation).replace("|", "\\|")
        rows.append(f"| `{'.'.join(path)}` | `{variable(path)}` | `{kind}` | `{shown}` |")
    return "\n".join(rows) + "\n"
