"""The AsyncAPI document (eventbus._asyncapi, ``eventbus docs``), checked against the official schema.

The schema is the AsyncAPI Initiative's own (tests/asyncapi/README.md says where the copy comes
from). The apps' documents kept in docs/asyncapi/ must match what the code generates now.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventbus import Context, Message, on
from eventbus._asyncapi import document, render, server
from eventbus._cli import main
from eventbus._router import load_target
from tests.cli_process import ROOT

jsonschema = pytest.importorskip("jsonschema", reason="validating AsyncAPI documents needs jsonschema")
pytest.importorskip("msgspec", reason="the typed sample app needs msgspec (eventbus[msgspec])")
pytest.importorskip("pydantic", reason="the typed sample app needs pydantic (eventbus[pydantic])")
yaml = pytest.importorskip("yaml", reason="the apps' documents are YAML (eventbus[yaml])")

SCHEMA = json.loads((ROOT / "tests" / "asyncapi" / "asyncapi-3.0.0.schema.json").read_text())
DEFAULT_URL = "redis://localhost:6379/0"
# The documents kept in the repository, and the module each describes.
APP_DOCUMENTS = {
    "olympics.yaml": "apps.olympics",
    "broadcast.yaml": "apps.broadcast",
    "olympics_streams.yaml": "apps.olympics_streams.listeners",
}


def validate(doc: dict[str, Any]) -> None:
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in all_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in all_refs(v)]
    return []


@pytest.mark.parametrize(
    "target", [*APP_DOCUMENTS.values(), "tests.sample_apps.typed_orders", "tests.sample_apps.batches"]
)
def test_documents_validate_against_the_asyncapi_schema(target: str) -> None:
    doc = document(load_target(target), DEFAULT_URL)
    validate(doc)
    for ref in all_refs(doc):  # the schema cannot check that references point somewhere
        resolve(doc, ref)


def test_the_schema_really_checks() -> None:
    doc = document(load_target("tests.sample_apps.typed_orders"), DEFAULT_URL)
    broken = {**doc, "operations": {"x": {"action": "listen", "channel": {"$ref": "#/channels/orders"}}}}
    with pytest.raises(AssertionError, match="action"):
        validate(broken)


def test_every_kind_payload_and_declared_send() -> None:
    doc = document(load_target("tests.sample_apps.typed_orders"), DEFAULT_URL)
    kinds = {c["address"]: c["x-eventbus-kind"] for c in doc["channels"].values()}
    assert kinds == {
        "orders": "channel",
        "orders:*": "pattern",
        "orders:stored": "channel",
        "refunds": "sharded",
        "audit": "stream",
        "order-ids": "channel",
        "notes": "channel",
    }
    operations = {(o["x-eventbus-handler"], o["action"]): o for o in doc["operations"].values()}
    assert set(operations) == {
        ("store", "receive"),
        ("store", "send"),
        ("watch", "receive"),
        ("refund", "receive"),
        ("audit", "receive"),
        ("order_id", "receive"),
        ("note", "receive"),
    }
    assert operations[("store", "receive")]["x-eventbus-ordered-by"] == "customer"
    assert operations[("store", "receive")]["summary"] == "Store an order and announce it."
    assert operations[("audit", "receive")]["x-eventbus-group"] == "auditors"

    def payload(handler: str, action: str = "receive") -> Any:
        message = resolve(doc, resolve(doc, operations[(handler, action)]["messages"][0]["$ref"])["$ref"])
        return message.get("payload")

    assert payload("store") == {"$ref": "#/components/schemas/Order"}
    order = doc["components"]["schemas"]["Order"]
    assert order["required"] == ["id", "customer"]
    assert order["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert payload("store", "send")["properties"]["total"]["type"] == "number"  # pydantic's schema
    assert payload("refund")["$ref"] == "#/components/schemas/Refund"  # a dataclass, through msgspec
    assert payload("order_id") == {"type": "integer"}
    assert payload("note") == {"type": "string"}
    assert payload("watch") is None  # raw: no schema
    assert doc["info"]["version"] == "1.2.3"


def test_server_from_the_url_without_credentials() -> None:
    assert server("redis://alice:s3cret@cache.internal:6380/2") == {
        "host": "cache.internal:6380",
        "protocol": "redis",
        "pathname": "/2",
    }
    assert server("rediss://:pw@[::1]/0")["host"] == "[::1]:6379"
    doc = document(load_target("tests.sample_apps.typed_orders"), "redis://alice:s3cret@h:1/0")
    assert "s3cret" not in render(doc, "json") and "alice" not in render(doc, "json")


@pytest.mark.parametrize(("name", "target"), sorted(APP_DOCUMENTS.items()))
def test_app_documents_in_the_repository_are_up_to_date(name: str, target: str) -> None:
    path = ROOT / "docs" / "asyncapi" / name
    fresh = render(document(load_target(target), DEFAULT_URL), "yaml")
    assert path.read_text() == fresh, (
        f"{path.relative_to(ROOT)} is stale: regenerate it with "
        f"python -m eventbus docs {target} --url {DEFAULT_URL} --output {path.relative_to(ROOT)}"
    )
    validate(yaml.safe_load(fresh))


@pytest.mark.parametrize("fmt", ["json", "yaml", "html"])
def test_docs_command_writes_each_format(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    out = tmp_path / f"doc.{fmt}"
    assert main(["docs", "tests.sample_apps.typed_orders", "--format", fmt, "--output", str(out)]) == 0
    text = out.read_text()
    if fmt == "json":
        validate(json.loads(text))
    elif fmt == "yaml":
        validate(yaml.safe_load(text))
    else:
        # Self-contained: nothing loaded from the network.
        assert text.startswith("<!doctype html>") and "<code>orders:*</code>" in text
        assert "<script" not in text and "<link" not in text


def test_yaml_without_pyyaml_is_one_line_exit_2(tmp_path: Path) -> None:
    code = "import sys; sys.modules['yaml'] = None; from eventbus._cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "docs", "tests.sample_apps.typed_orders"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "eventbus: error: --format yaml needs PyYAML: pip install 'eventbus[yaml]' (or use --format json)"
    ]


def test_routes_shows_payload_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "tests.sample_apps.typed_orders"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("store" in line and "payload=Order(msgspec)" in line and "key=customer" in line for line in lines)
    assert any("refund" in line and "payload=Refund(msgspec)+Message" in line for line in lines)
    assert any("watch" in line and "payload=Message" in line for line in lines)


def test_batch_handlers_say_how_their_batches_close_and_keep_the_message_schema() -> None:
    doc = document(load_target("tests.sample_apps.batches"), DEFAULT_URL)
    operations = {o["x-eventbus-handler"]: o for o in doc["operations"].values()}
    assert operations["tally"]["x-eventbus-batch"] == {"maxSize": 500, "maxWait": 0.05}
    assert operations["audit"]["x-eventbus-batch"] == {"maxSize": 200, "maxWait": 1.0}
    message = resolve(doc, resolve(doc, operations["store"]["messages"][0]["$ref"])["$ref"])
    assert message["payload"] == {"$ref": "#/components/schemas/Order"}  # each message, not the list


def test_routes_shows_batches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "tests.sample_apps.batches"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("tally" in line and "payload=list[Message]" in line and "batch=500/0.05s" in line for line in lines)
    assert any("store" in line and "payload=list[Order](msgspec)+list[Message]" in line for line in lines)
    assert any("audit" in line and line.startswith("stream") and "batch=200/1s" in line for line in lines)


@dataclasses.dataclass
class Rate:
    pair: str
    rate: float


def test_a_handler_that_returns_something_documents_its_reply() -> None:
    @on("rates.get")
    async def rate(msg: dict[str, Any], ctx: Context) -> Rate:
        return Rate("EURUSD", 1.0)

    @on("reply")  # a channel of the application's own with the same name
    async def raw(msg: Message, ctx: Context) -> bytes:
        return msg.data

    @on("events")
    async def quiet(msg: Message, ctx: Context) -> None:
        return None

    doc = document(load_target([rate, raw, quiet]), "redis://localhost:6379/0")
    validate(doc)
    for ref in all_refs(doc):
        assert resolve(doc, ref) is not None
    operations = doc["operations"]
    [replies] = [name for name, channel in doc["channels"].items() if channel["x-eventbus-kind"] == "reply"]
    assert doc["channels"][replies]["address"] is None  # each requester's own
    assert operations["rate.receive.rates.get"]["reply"] == {
        "channel": {"$ref": f"#/channels/{replies}"},
        "messages": [{"$ref": f"#/channels/{replies}/messages/Rate"}],
    }
    [raw_receives] = [o for o in operations.values() if o["x-eventbus-handler"] == "raw"]
    assert raw_receives["reply"]["messages"] == [{"$ref": f"#/channels/{replies}/messages/bytes"}]
    assert "reply" not in operations["quiet.receive.events"]
    assert any(channel["address"] == "reply" for channel in doc["channels"].values())
    assert doc["components"]["schemas"]["Rate"]["properties"]["rate"]["type"] == "number"
