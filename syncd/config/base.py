"""What every config model shares: the strict base model, the markers a model puts on
its fields (``Transport``, ``Secret``) and the walkers that read them, and secrets
resolved from the environment."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class Transport:
    """Marks a field that changes how and where requests are sent, never what a record
    maps to (``Annotated[float, TRANSPORT]``): left out of the mapping fingerprint, so
    tuning it doesn't cost a run that re-maps every row."""


TRANSPORT = Transport()


@dataclass(frozen=True, slots=True)
class Secret:
    """Marks a ``*_env`` field naming the environment variable that holds a secret
    (``Annotated[str | None, Secret()]``).

    ``kinds``: the secret is wanted only when the table's ``kind`` is one of these (an
    HTTP source's ``token_env`` serves ``bearer`` and ``header``, not ``basic``).
    """

    kinds: tuple[str, ...] = ()
    user_field: str | None = None
    """The field of the same table holding the user this secret is the password of
    (HTTP basic auth): the pair is then scrubbed in every form it is sent in."""


SECRET = Secret()


class _Model(BaseModel):
    # Each field's docstring documents it (a test checks every field has one); they are
    # not copied into the fields' descriptions (``use_attribute_docstrings``): nothing shows
    # those, and reading every model's source for them cost each process ~70 ms.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def transport_fields(cls) -> frozenset[str]:
        """The fields marked ``Transport``: how requests are sent, not what is sent."""
        return frozenset(
            name
            for name, field in cls.model_fields.items()
            if any(isinstance(item, Transport) for item in field.metadata)
        )


def secret_fields(model: type[BaseModel]) -> dict[str, Secret]:
    """A model's fields marked ``Secret``, by name."""
    found: dict[str, Secret] = {}
    for name, field in model.model_fields.items():
        for item in field.metadata:
            if isinstance(item, Secret):
                found[name] = item
    return found


def raw_secret_names(
    model: type[BaseModel], data: Any, path: str = ""
) -> Iterator[tuple[str, str]]:
    """(TOML path, environment variable) of every ``Secret`` field a (possibly invalid)
    parsed table of ``model`` names (see ``raw_secret_fields``)."""
    for where, name, _, _ in raw_secret_fields(model, data, path):
        yield where, name


def raw_secret_fields(
    model: type[BaseModel], data: Any, path: str = ""
) -> Iterator[tuple[str, str, Secret, Mapping[str, Any]]]:
    """(TOML path, environment variable, marker, the table holding it) of every
    ``Secret`` field a (possibly invalid) parsed table of ``model`` names, walking its
    nested tables and lists of tables.

    Read defensively, so a file with other problems still gets its missing variables
    reported in the same pass: a table that is not a table is skipped, a union of
    models is resolved by the table's ``kind``, and a table with ``enabled = false``
    wants no secret.
    """
    if not isinstance(data, Mapping) or data.get("enabled", True) is False:
        return
    for name, marker in secret_fields(model).items():
        value = data.get(name)
        if not isinstance(value, str) or not value:
            continue
        if marker.kinds and _kind(model, data) not in marker.kinds:
            continue
        yield (f"{path}.{name}" if path else name, value, marker, data)
    for name, field in model.model_fields.items():
        if name not in data:
            continue
        where = f"{path}.{name}" if path else name
        value = data[name]
        if _is_list(field.annotation):
            if not isinstance(value, list):
                continue
            for index, item in enumerate(value):
                member = _member(field.annotation, item)
                if member is not None:
                    yield from raw_secret_fields(member, item, f"{where}[{index}]")
            continue
        member = _member(field.annotation, value)
        if member is not None:
            yield from raw_secret_fields(member, value, where)


def _kind(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    field = model.model_fields.get("kind")
    return data.get("kind", field.default if field is not None else None)


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (list, tuple)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's annotation allows directly or through unions and ``Annotated``
    (a list field: its items'; other containers: none, secrets never live there)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]
    if origin is typing.Annotated or origin in (list, tuple):
        return _models_in(typing.get_args(annotation)[0])
    return []


def _member(annotation: Any, data: Any) -> type[BaseModel] | None:
    """The model a raw table is read as: the only one, or the one whose ``kind`` matches."""
    if not isinstance(data, Mapping):
        return None
    models = _models_in(annotation)
    if len(models) == 1:
        return models[0]
    for model in models:
        field = model.model_fields.get("kind")
        if field is not None and data.get("kind") in typing.get_args(field.annotation):
            return model
    return _shared_base(models)  # kind missing or unknown: what every kind has


def _shared_base(models: list[type[BaseModel]]) -> type[BaseModel] | None:
    """The nearest model class every one of ``models`` derives from (``_TargetBase``)."""
    if not models:
        return None
    for base in models[0].__mro__:
        if (
            isinstance(base, type)
            and issubclass(base, BaseModel)
            and base is not BaseModel
            and all(issubclass(model, base) for model in models)
        ):
            return base
    return None


def has_password(url: str) -> bool:
    """Whether a URL carries a password (which belongs in an environment variable)."""
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def resolve_secret(env_name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of a secret named by an environment variable (or ``NAME_FILE``)."""
    environ = os.environ if environ is None else environ
    value = environ.get(env_name)
    if value:
        return value
    file_name = environ.get(f"{env_name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
    return None
