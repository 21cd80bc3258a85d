"""Agent types from ``agents.toml``: the loader (every kind of mistake names the file, the type and the field),
``GET /agent-types``, ``POST /agents`` with each type, and ``/v1/models``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from app.agent_types import AgentTypesError, load_agent_types, parse_agent_types
from app.factory import create_app
from app.settings import DEFAULT_AGENTS_FILE, Settings, SettingsError

from .fake_letta import make_fake

GOOD = """
[[agent_type]]
id = "tutor"
name = "Essay Tutor"
description = "helps with essays"
persona = "I am a tutor."
human = "Name: {name}."

[[agent_type]]
id = "coach"
name = "Coach"
persona = "I coach."
human = "Student: {name}; goals unknown."
model = "openai/special"
tools = ["archival_memory_search"]

[[agent_type.block]]
label = "plan"
value = "no plan yet"
limit = 500
description = "the study plan"

[[agent_type.block]]
label = "notes"
value = ""
"""


def parse(text: str) -> Any:
    return parse_agent_types(textwrap.dedent(text), "types.toml", model="default/model", embedding="default/embed")


def one(**fields: Any) -> str:
    """A file with one type: the minimal good fields, overridden/extended by ``fields`` (``None`` drops one)."""
    base: dict[str, Any] = {"id": "tutor", "name": "Tutor", "persona": "I help.", "human": "Name: {name}."}
    base.update(fields)
    lines = ["[[agent_type]]"]
    lines += [f"{key} = {_toml(value)}" for key, value in base.items() if value is not None]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def test_a_good_file_gives_every_type_in_order_with_defaults_filled_in() -> None:
    types = parse(GOOD)
    assert list(types) == ["tutor", "coach"]
    tutor, coach = types["tutor"], types["coach"]
    assert (tutor.name, tutor.description, tutor.model, tutor.embedding) == (
        "Essay Tutor",
        "helps with essays",
        "default/model",
        "default/embed",
    )
    assert tutor.tools == ()
    assert (coach.model, coach.embedding, coach.description) == ("openai/special", "default/embed", "")
    assert coach.tools == ("archival_memory_search",)
    assert coach.memory_blocks("Ada") == [
        {"label": "persona", "value": "I coach."},
        {"label": "human", "value": "Student: Ada; goals unknown."},
        {"label": "plan", "value": "no plan yet", "limit": 500, "description": "the study plan"},
        {"label": "notes", "value": ""},
    ]
    assert tutor.human_block(None) == "Name: not known yet."
    assert types.listing() == [
        {"id": "tutor", "name": "Essay Tutor", "description": "helps with essays"},
        {"id": "coach", "name": "Coach", "description": ""},
    ]


def test_the_shipped_file_has_the_essay_tutor_and_a_study_coach() -> None:
    types = load_agent_types(DEFAULT_AGENTS_FILE, model="m", embedding="e")
    assert list(types) == ["tutor", "study-coach"]
    tutor = types["tutor"]
    assert tutor.name == "Letta Tutor"
    assert tutor.persona.startswith("I am a college-essay tutor.")
    assert "never write the essay for them" in tutor.persona
    assert tutor.human_block("Ada").startswith("Student's name: Ada.\n")
    coach = types["study-coach"]
    assert coach.name == "Study Coach"
    assert coach.tools == ("archival_memory_insert", "archival_memory_search")
    assert [b.label for b in coach.block] == ["study_plan"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (one(colour="blue"), "agent type 'tutor': field 'colour': unknown field"),
        (one(persona=None), "agent type 'tutor': field 'persona': missing (required)"),
        (one(human=None), "agent type 'tutor': field 'human': missing (required)"),
        (one(name=None), "agent type 'tutor': field 'name': missing (required)"),
        (one(persona=5), "agent type 'tutor': field 'persona': "),
        (one(persona="  "), "agent type 'tutor': field 'persona': must not be empty"),
        (one(tools="web_search"), "agent type 'tutor': field 'tools': must be an array"),
        (one(tools=["a", 3]), "agent type 'tutor': field 'tools[1]': "),
        (one(tools=["a", "a"]), "agent type 'tutor': field 'tools': names a tool twice"),
        (one(model=""), "agent type 'tutor': field 'model': must not be empty"),
        (one(human="Hi {student}"), "agent type 'tutor': field 'human': unknown placeholder {student}"),
        (one(human="Hi {name"), "agent type 'tutor': field 'human': not a valid template"),
        (one(id="Tutor Bot"), "agent type #1: field 'id': 'Tutor Bot' is not a type id"),
        (one(id=None), "agent type #1: field 'id': missing"),
        (one(id=3), "agent type #1: field 'id': must be a string"),
        (one() + one(name="Again"), "agent type 'tutor': field 'id': defined twice"),
        (one() + "[[agent_type.block]]\nlabel = 'x'\n", "agent type 'tutor': field 'block[0].value': missing"),
        (
            one() + "[[agent_type.block]]\nlabel = 'x'\nvalue = ''\nsize = 3\n",
            "agent type 'tutor': field 'block[0].size': unknown field",
        ),
        (
            one() + "[[agent_type.block]]\nlabel = 'x'\nvalue = ''\nlimit = 'big'\n",
            "agent type 'tutor': field 'block[0].limit': ",
        ),
        (
            one() + "[[agent_type.block]]\nlabel = 'x'\nvalue = 'long text'\nlimit = 3\n",
            "agent type 'tutor': field 'block[0].limit': 3 is not positive or is shorter",
        ),
        (
            one() + "[[agent_type.block]]\nlabel = 'human'\nvalue = ''\n",
            "agent type 'tutor': field 'block[0].label': 'human' is written by",
        ),
        (
            one() + "[[agent_type.block]]\nlabel = 'x'\nvalue = ''\n[[agent_type.block]]\nlabel = 'x'\nvalue = ''\n",
            "agent type 'tutor': field 'block[1].label': 'x' is used twice",
        ),
        ("", "defines no agent type"),
        ("[types.tutor]\nname = 'x'\n", "unknown top-level field 'types'"),
        ("agent_type = 'tutor'\n", "defines no agent type"),
        ("[[agent_type]]\nid = 'tutor'\nid = 'coach'\n", "not valid TOML"),
    ],
)
def test_each_mistake_names_the_file_the_type_and_the_field(text: str, expected: str) -> None:
    with pytest.raises(AgentTypesError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith("agent types file types.toml: "), message
    assert expected in message, message
    assert isinstance(caught.value, SettingsError)  # startup treats it as a bad setting


def test_a_file_that_cannot_be_read_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(AgentTypesError, match=r"AGENTS_FILE .*nowhere\.toml: cannot be read"):
        load_agent_types(missing, model="m", embedding="e")
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n")
    with pytest.raises(AgentTypesError, match=r"latin1\.toml: not UTF-8"):
        load_agent_types(tmp_path / "latin1.toml", model="m", embedding="e")


def test_create_app_reads_agents_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    app = create_app(Settings(agents_file=str(good)), client=make_fake())
    assert app is not None
    bad = tmp_path / "bad.toml"
    bad.write_text(one(persona=None))
    with pytest.raises(SettingsError, match=r"bad\.toml: agent type 'tutor': field 'persona'"):
        create_app(Settings(agents_file=str(bad)), client=make_fake())


# ---------------------------------------------------------------- the HTTP API


@pytest.fixture
async def custom(tmp_path: Path, letta: Any) -> Any:
    path = tmp_path / "agents.toml"
    path.write_text(GOOD)
    quart = create_app(Settings(agents_file=str(path), model="svc/model", embedding="svc/embed"), client=letta)
    async with quart.test_app():
        yield quart


@pytest.mark.anyio
async def test_agent_types_lists_the_file_and_needs_the_token(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(GOOD)
    quart = create_app(Settings(agents_file=str(path), service_token="tok"), client=make_fake())
    async with quart.test_app():
        client = quart.test_client()
        assert (await client.get("/agent-types")).status_code == 401
        response = await client.get("/agent-types", headers={"Authorization": "Bearer tok"})
        assert response.status_code == 200
        assert await response.get_json() == {
            "agent_types": [
                {"id": "tutor", "name": "Essay Tutor", "description": "helps with essays"},
                {"id": "coach", "name": "Coach", "description": ""},
            ]
        }


@pytest.mark.anyio
async def test_the_shipped_types_are_listed(app: Quart) -> None:
    body = await (await app.test_client().get("/agent-types")).get_json()
    assert [(t["id"], t["name"]) for t in body["agent_types"]] == [
        ("tutor", "Letta Tutor"),
        ("study-coach", "Study Coach"),
    ]


@pytest.mark.anyio
async def test_agents_are_created_from_their_types_definition(custom: Quart, letta: Any) -> None:
    client = custom.test_client()
    tutor = await client.post("/agents", json={"user_id": "u1", "agent_type": "tutor", "user_name": "Ada"})
    coach = await client.post("/agents", json={"user_id": "u1", "agent_type": "coach", "user_name": "Ada"})
    assert (tutor.status_code, coach.status_code) == (201, 201)
    tutor_body, coach_body = await tutor.get_json(), await coach.get_json()
    assert (tutor_body["agent_type"], coach_body["agent_type"]) == ("tutor", "coach")
    assert tutor_body["agent_id"] != coach_body["agent_id"]
    made_tutor, made_coach = letta.agents.requests
    assert (made_tutor["model"], made_tutor["embedding"], made_tutor["tools"]) == ("svc/model", "svc/embed", [])
    assert [b["label"] for b in made_tutor["memory_blocks"]] == ["persona", "human"]
    assert made_tutor["memory_blocks"][1]["value"] == "Name: Ada."
    assert "agent_type:tutor" in made_tutor["tags"]
    assert (made_coach["model"], made_coach["embedding"]) == ("openai/special", "svc/embed")
    assert made_coach["tools"] == ["archival_memory_search"]
    assert [b["label"] for b in made_coach["memory_blocks"]] == ["persona", "human", "plan", "notes"]
    assert made_coach["memory_blocks"][2] == {
        "label": "plan",
        "value": "no plan yet",
        "limit": 500,
        "description": "the study plan",
    }
    assert "agent_type:coach" in made_coach["tags"]
    again = await client.post("/agents", json={"user_id": "u1", "agent_type": "coach"})
    assert again.status_code == 200
    assert (await again.get_json())["agent_id"] == coach_body["agent_id"]
    assert letta.agents.created == 2


@pytest.mark.anyio
async def test_an_unknown_agent_type_is_a_400_naming_it_and_the_known_ones(custom: Quart, letta: Any) -> None:
    response = await custom.test_client().post("/agents", json={"user_id": "u1", "agent_type": "study-coach"})
    assert response.status_code == 400
    body = await response.get_json()
    assert (body["error"], body["field"]) == ("invalid_request", "agent_type")
    assert "'study-coach'" in body["message"]
    assert "tutor, coach" in body["message"]
    assert letta.agents.created == 0


@pytest.mark.anyio
async def test_v1_models_are_the_files_types_with_their_names(custom: Quart) -> None:
    body = await (await custom.test_client().get("/v1/models")).get_json()
    assert [(m["id"], m["name"]) for m in body["data"]] == [("tutor", "Essay Tutor"), ("coach", "Coach")]
    response = await custom.test_client().post(
        "/v1/chat/completions",
        json={"model": "study-coach", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-OpenWebUI-User-Id": "u1"},
    )
    assert response.status_code == 404
    assert (await response.get_json())["error"]["param"] == "model"
