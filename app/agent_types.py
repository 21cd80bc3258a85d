"""Agent types: what a new student's agent starts as, defined in a TOML file (``agents.toml``).

Each ``[[agent_type]]`` table is one type students can pick (one OpenWebUI model each)::

    [[agent_type]]
    id = "tutor"                      # the type's key: POST /agents' agent_type, the model id, Letta's tag
    name = "Letta Tutor"              # what students see (OpenWebUI's model menu)
    description = "..."               # optional
    persona = "I am ..."              # the agent's ``persona`` block
    human = "Student's name: {name}." # the ``human`` block; ``{name}`` is the student's name
    model = "openai/gpt-4o"           # optional Letta handles; default LETTA_MODEL / LETTA_EMBEDDING
    embedding = "openai/text-embedding-3-small"
    tools = ["archival_memory_search"] # optional: Letta tools (by name) attached besides its base tools

    [[agent_type.block]]              # optional extra memory blocks
    label = "goals"
    value = "..."
    limit = 5000                      # optional
    description = "..."               # optional

The file is read once, when the service starts; anything wrong with it (TOML syntax, an
unknown or missing field, a wrong type, a duplicate id, a bad ``{}`` placeholder) raises
:class:`AgentTypesError` — a :class:`~app.settings.SettingsError`, so startup fails with a
message naming the file, the type and the field.  Values are frozen attrs classes.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import attrs
import cattrs
from letta_client.types import AgentType, CreateBlockParam

from pipeline.wire import strict

from .settings import SettingsError

ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""A type id: a Letta tag, an OpenWebUI sub-model id after ``<function id>.``, a URL-safe word."""

RESERVED_LABELS: Final = frozenset({"persona", "human"})


class AgentTypesError(SettingsError):
    """The agent-types file cannot be used; the message names the file, the type and the field."""


@attrs.frozen
class MemoryBlock:
    """An extra memory block every agent of a type starts with."""

    label: str
    value: str
    limit: int | None = None
    description: str | None = None

    def to_letta(self) -> CreateBlockParam:
        """Letta's ``CreateBlock`` for this block."""
        block: CreateBlockParam = {"label": self.label, "value": self.value}
        if self.limit is not None:
            block["limit"] = self.limit
        if self.description is not None:
            block["description"] = self.description
        return block


@attrs.frozen
class AgentTemplate:
    """One agent type as written in the file (``model``/``embedding`` ``None``: the service's defaults)."""

    id: str
    name: str
    persona: str
    human: str
    description: str = ""
    model: str | None = None
    embedding: str | None = None
    tools: tuple[str, ...] = ()
    block: tuple[MemoryBlock, ...] = ()

    letta_agent_type: ClassVar[AgentType] = "letta_v1_agent"

    def human_block(self, user_name: str | None) -> str:
        """The ``human`` block for a student (their name when OpenWebUI gave one)."""
        name = user_name.strip() if user_name and user_name.strip() else "not known yet"
        return self.human.format(name=name)

    def memory_blocks(self, user_name: str | None) -> list[CreateBlockParam]:
        """Every block a new agent of this type starts with: persona, human, then the extra ones."""
        return [
            {"label": "persona", "value": self.persona},
            {"label": "human", "value": self.human_block(user_name)},
            *(b.to_letta() for b in self.block),
        ]


attrs.resolve_types(MemoryBlock)
attrs.resolve_types(AgentTemplate)


@attrs.frozen
class AgentTypes(Mapping[str, AgentTemplate]):
    """The service's agent types by id, in the file's order; ``model``/``embedding`` are filled in."""

    by_id: Mapping[str, AgentTemplate]
    source: str = "<built in>"

    def __getitem__(self, key: str) -> AgentTemplate:
        return self.by_id[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_id)

    def __len__(self) -> int:
        return len(self.by_id)

    def listing(self) -> list[dict[str, str]]:
        """``GET /agent-types``' entries: what a client shows students."""
        return [{"id": t.id, "name": t.name, "description": t.description} for t in self.by_id.values()]


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (str, int, bool):
        converter.register_structure_hook(kind, strict(kind))
    return converter


_CONVERTER: Final = _converter()
_FIELDS: Final = tuple(a.name for a in attrs.fields(AgentTemplate))
_REQUIRED: Final = tuple(a.name for a in attrs.fields(AgentTemplate) if a.default is attrs.NOTHING)
_BLOCK_FIELDS: Final = tuple(a.name for a in attrs.fields(MemoryBlock))


def load_agent_types(path: str | Path, *, model: str, embedding: str) -> AgentTypes:
    """The agent types in ``path``; unset handles become ``model`` / ``embedding``.

    Raises :class:`AgentTypesError` naming the file, the type and the field.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentTypesError(f"AGENTS_FILE {where}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise AgentTypesError(f"AGENTS_FILE {where}: not UTF-8 text ({exc.reason})") from exc
    return parse_agent_types(text, where, model=model, embedding=embedding)


def parse_agent_types(text: str, where: str, *, model: str, embedding: str) -> AgentTypes:
    """The agent types in TOML ``text`` (``where`` names it in errors); see :func:`load_agent_types`."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AgentTypesError(f"agent types file {where}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"agent_type"})
    if unknown:
        raise AgentTypesError(
            f"agent types file {where}: unknown top-level field {unknown[0]!r} (write each type as [[agent_type]])"
        )
    tables = document.get("agent_type")
    if not isinstance(tables, list) or not tables:
        raise AgentTypesError(f"agent types file {where}: defines no agent type (add an [[agent_type]] table)")
    found: dict[str, AgentTemplate] = {}
    for index, table in enumerate(tables):
        template = _template(table, f"agent types file {where}: agent type #{index + 1}", where)
        if template.id in found:
            raise AgentTypesError(f"agent types file {where}: agent type {template.id!r}: field 'id': defined twice")
        found[template.id] = attrs.evolve(
            template, model=template.model or model, embedding=template.embedding or embedding
        )
    return AgentTypes(found, where)


def _template(table: Any, anonymous: str, where: str) -> AgentTemplate:
    if not isinstance(table, dict):
        raise AgentTypesError(f"{anonymous}: not a table")
    type_id = table.get("id")
    if not isinstance(type_id, str):
        what = "missing" if type_id is None else f"must be a string, not {type(type_id).__name__}"
        raise AgentTypesError(f"{anonymous}: field 'id': {what}")
    if not ID_PATTERN.fullmatch(type_id):
        raise AgentTypesError(
            f"{anonymous}: field 'id': {type_id!r} is not a type id (lower-case letters, digits, '-' and '_', "
            "at most 63, starting with a letter or digit)"
        )
    at = f"agent types file {where}: agent type {type_id!r}"

    def fail(field: str, problem: str) -> AgentTypesError:
        return AgentTypesError(f"{at}: field {field!r}: {problem}")

    for name in table:
        if name not in _FIELDS:
            raise fail(name, f"unknown field (known: {', '.join(_FIELDS)})")
    for name in _REQUIRED:
        if name not in table:
            raise fail(name, "missing (required)")
    if not isinstance(table.get("tools", []), list):
        raise fail("tools", "must be an array of tool names")
    blocks = table.get("block", [])
    if not isinstance(blocks, list):
        raise fail("block", "must be an array of tables ([[agent_type.block]])")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise fail(f"block[{i}]", "must be a table ([[agent_type.block]])")
        for name in block:
            if name not in _BLOCK_FIELDS:
                raise fail(f"block[{i}].{name}", f"unknown field (known: {', '.join(_BLOCK_FIELDS)})")
        for name in ("label", "value"):
            if name not in block:
                raise fail(f"block[{i}].{name}", "missing (required)")
    try:
        template = _CONVERTER.structure(table, AgentTemplate)
    except Exception as exc:  # cattrs' validation errors: one message per bad field
        problem = cattrs.transform_error(exc, path="")[0]
        message, _, field = problem.rpartition(" @ ")
        raise fail(field.lstrip(".") or "?", message or problem) from exc
    _check(template, fail)
    return template


def _check(template: AgentTemplate, fail: Any) -> None:
    """What types alone do not say: non-empty text, the ``{name}`` placeholder, labels, tools."""
    for name in ("name", "persona", "human"):
        if not getattr(template, name).strip():
            raise fail(name, "must not be empty")
    try:
        placeholders = {f for _, f, _, _ in string.Formatter().parse(template.human) if f is not None}
    except ValueError as exc:
        raise fail("human", f"not a valid template: {exc} (write a literal brace as {{{{ or }}}})") from exc
    if placeholders - {"name"}:
        raise fail(
            "human", f"unknown placeholder {{{sorted(placeholders - {'name'})[0]}}} (only {{name}} is filled in)"
        )
    for name in ("model", "embedding"):
        value = getattr(template, name)
        if value is not None and not value.strip():
            raise fail(name, "must not be empty (leave it out for the service's default)")
    for i, tool in enumerate(template.tools):
        if not tool.strip():
            raise fail(f"tools[{i}]", "must not be empty")
    if len(set(template.tools)) != len(template.tools):
        raise fail("tools", "names a tool twice")
    labels: set[str] = set()
    for i, block in enumerate(template.block):
        if not block.label.strip():
            raise fail(f"block[{i}].label", "must not be empty")
        if block.label in RESERVED_LABELS:
            raise fail(f"block[{i}].label", f"{block.label!r} is written by the 'persona'/'human' fields")
        if block.label in labels:
            raise fail(f"block[{i}].label", f"{block.label!r} is used twice")
        labels.add(block.label)
        if block.limit is not None and (block.limit <= 0 or block.limit < len(block.value)):
            raise fail(f"block[{i}].limit", f"{block.limit} is not positive or is shorter than the block's value")
