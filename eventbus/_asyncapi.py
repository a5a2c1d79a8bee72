"""An AsyncAPI 3.0 document generated from a router: ``python -m eventbus docs MODULE``.

What is described, from the code alone (nothing runs, nothing connects):

- every subscription as a channel: plain channels, patterns (the glob is the address), sharded
  channels and streams, told apart by the ``x-eventbus-kind`` extension (AsyncAPI has no words for
  Redis's kinds); a stream's receive operation names its consumer group (``x-eventbus-group``)
  and a handler ordered per key says by what (``x-eventbus-ordered-by``), a batch handler how its
  batches close (``x-eventbus-batch``: ``maxSize``, ``maxWait`` seconds; each message is still one
  payload of the schema);
- one ``receive`` operation per handler and subscription, and one ``send`` operation per channel a
  handler declares with ``@on(..., publishes={"channel": Type})``;
- the reply to a request (``bus.request``) for a handler whose return annotation is not None: the
  operation's ``reply``, on the ``reply`` channel (whose address is the requester's, named in each
  request), with the return type's schema;
- each message's payload schema from the handler's annotation (msgspec and pydantic produce the
  JSON Schemas; their shared definitions go to ``components.schemas``), or, for a handler taking
  the raw :class:`~eventbus.Message`, a message without a schema;
- the server from the URL, without credentials.

The document is deterministic (sorted, no timestamps), so a copy kept in a repository can be
compared with a fresh one to find out that it is stale.
"""

from __future__ import annotations

import html
import inspect
import re
import sys
import typing
from typing import Any
from urllib.parse import urlsplit

import orjson

from eventbus._errors import ConfigError
from eventbus._message import Message
from eventbus._payloads import json_schema, type_label
from eventbus._router import Handler, Router, stream_group
from eventbus._subscription import Subscription

ASYNCAPI_VERSION = "3.0.0"
FORMATS = ("yaml", "json", "html")
RAW = "raw"
REPLY_CHANNEL = "reply"
_NO_REPLY = object()
_ID = re.compile(r"[^A-Za-z0-9_.-]+")
_KIND_TITLES = {"channel": "channel", "pattern": "pattern", "sharded": "sharded channel", "stream": "stream"}


def document(router: Router, url: str, *, title: str | None = None, version: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``router``'s handlers, served by the Redis at ``url``."""
    module = sys.modules.get(router.name)
    builder = _Builder()
    for subscription, handler in router.routes():
        builder.receive(subscription, handler)
    for handler in router.handlers:
        for channel, annotation in sorted((handler.options.publishes or {}).items()):
            builder.send(channel, annotation, handler)
    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title or router.name,
            "version": version or str(getattr(module, "__version__", "0.0.0")),
        },
        "defaultContentType": "application/json",
        "servers": {"redis": server(url)},
        "channels": dict(sorted(builder.channels.items())),
        "operations": dict(sorted(builder.operations.items())),
        "components": {
            "messages": dict(sorted(builder.messages.items())),
        },
    }
    description = _first_paragraph(inspect.getdoc(module)) if module is not None else ""
    if description:
        doc["info"]["description"] = description
    if builder.schemas:
        doc["components"]["schemas"] = dict(sorted(builder.schemas.items()))
    return doc


def server(url: str) -> dict[str, Any]:
    """The server object of a Redis URL: host, port and database; user and password left out."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"cannot describe a server at a {parts.scheme or 'scheme-less'} URL")
    if parts.scheme == "unix":
        return {"host": "localhost", "protocol": "redis", "pathname": parts.path, "description": "a Unix socket"}
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    obj: dict[str, Any] = {
        "host": f"{host}:{parts.port or 6379}",
        "protocol": "redis",
        "pathname": parts.path or "/0",
    }
    if parts.scheme == "rediss":
        obj["description"] = "TLS (rediss://)"
    return obj


class _Builder:
    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {}
        self._channel_ids: dict[tuple[str, str], str] = {}
        self._message_ids: dict[Any, str] = {}
        self._reply_channel: str | None = None  # the id of the channel replies go to, once there is one

    def channel(self, kind: str, address: str, group: str | None = None) -> str:
        known = self._channel_ids.get((kind, address))
        if known is not None:
            return known
        base = _ID.sub("_", address).strip("_") or kind
        if kind != "channel":
            base = f"{kind}.{base}"
        channel_id = _unique(base, self.channels)
        self._channel_ids[(kind, address)] = channel_id
        obj: dict[str, Any] = {"address": address, "messages": {}, "x-eventbus-kind": kind}
        obj["description"] = {
            "channel": "Redis Pub/Sub channel (SUBSCRIBE / PUBLISH).",
            "pattern": "Redis Pub/Sub pattern (PSUBSCRIBE): every channel matching this glob.",
            "sharded": "Redis sharded Pub/Sub channel (SSUBSCRIBE / SPUBLISH).",
            "stream": "Redis stream read through a consumer group (XREADGROUP, XACK; XADD to send).",
        }[kind]
        self.channels[channel_id] = obj
        return channel_id

    def message(self, annotation: Any) -> str:
        """The id of the message in components.messages for a payload type (RAW for the envelope)."""
        if annotation is None:
            if RAW not in self.messages:
                self.messages[RAW] = {
                    "name": RAW,
                    "title": "Raw message",
                    "contentType": "application/octet-stream",
                    "description": "Any payload: the handler takes the raw message and decodes it itself.",
                }
            return RAW
        known = self._message_ids.get(annotation)
        if known is not None:
            return known
        label = type_label(annotation)
        message_id = _unique(_ID.sub("_", label).strip("_") or "payload", self.messages)
        self._message_ids[annotation] = message_id
        obj: dict[str, Any] = {"name": message_id, "title": label, "payload": self._schema(annotation)}
        if annotation is str:
            obj["contentType"] = "text/plain; charset=utf-8"
        elif annotation is bytes:
            obj["contentType"] = "application/octet-stream"
        self.messages[message_id] = obj
        return message_id

    def _schema(self, annotation: Any) -> dict[str, Any]:
        schema = json_schema(annotation)
        # Shared definitions move to components.schemas, and references follow them there.
        definitions = schema.pop("$defs", {})
        for name, definition in definitions.items():
            self.schemas.setdefault(name, _rewrite_refs(definition))
        rewritten: dict[str, Any] = _rewrite_refs(schema)
        return rewritten

    def _channel_message(self, channel_id: str, message_id: str) -> dict[str, str]:
        self.channels[channel_id]["messages"][message_id] = {"$ref": f"#/components/messages/{message_id}"}
        return {"$ref": f"#/channels/{channel_id}/messages/{message_id}"}

    def receive(self, subscription: Subscription, handler: Handler) -> None:
        group = stream_group(subscription, handler) if subscription.kind == "stream" else None
        channel_id = self.channel(subscription.kind, subscription.name)
        declared = subscription.declared
        if declared is not None and declared.recoverable:
            # Part of the contract too: how far back a subscriber can recover.
            self.channels[channel_id]["x-eventbus-history"] = {"messages": declared.history, "ttl": declared.ttl}
        annotation = handler.payload.decoder.annotation if handler.payload is not None else None
        message = self._channel_message(channel_id, self.message(annotation))
        operation_id = _unique(_ID.sub("_", f"{handler.name}.receive.{channel_id}"), self.operations)
        o = handler.options
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [message],
            "summary": _first_paragraph(inspect.getdoc(handler.func)) or f"handler {handler.name}",
            "x-eventbus-handler": handler.name,
        }
        # Part of the contract: the order a consumer can rely on, and which group shares the work.
        # (Concurrency, inbox and retries are tuning, often from the environment: left out, so the
        # document does not change with the machine it is generated on.)
        if o.key is not None:
            operation["x-eventbus-ordered-by"] = o.key if isinstance(o.key, str) else "a key function"
        if group is not None:
            operation["x-eventbus-group"] = group
        # A batch handler's messages are each the payload above; what it adds is up to max_wait of
        # delay before a message is handled, which a producer may want to know.
        if o.batch is not None:
            operation["x-eventbus-batch"] = {"maxSize": o.batch.max_size, "maxWait": o.batch.max_wait}
        if subscription.kind != "stream" and o.batch is None:  # a batch handler does not answer requests
            returned = _reply_annotation(handler)
            if returned is not _NO_REPLY:
                operation["reply"] = self.reply(returned)
        self.operations[operation_id] = operation

    def reply(self, annotation: Any) -> dict[str, Any]:
        """The reply object of a handler that returns ``annotation`` (None: a raw reply)."""
        if self._reply_channel is None:
            self._reply_channel = _unique(REPLY_CHANNEL, self.channels)
            self.channels[self._reply_channel] = {
                "address": None,
                "messages": {},
                "description": "The requester's reply channel: each request names its own "
                "(eventbus's request envelope carries it with a correlation id).",
                "x-eventbus-kind": "reply",
            }
        message = self._channel_message(self._reply_channel, self.message(annotation))
        return {"channel": {"$ref": f"#/channels/{self._reply_channel}"}, "messages": [message]}

    def send(self, address: str, annotation: Any, handler: Handler) -> None:
        channel_id = self.channel("channel", address)
        raw = annotation is None or annotation is Any
        message = self._channel_message(channel_id, self.message(None if raw else annotation))
        operation_id = _unique(_ID.sub("_", f"{handler.name}.send.{channel_id}"), self.operations)
        self.operations[operation_id] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [message],
            "summary": f"published by handler {handler.name}",
            "x-eventbus-handler": handler.name,
        }


def _reply_annotation(handler: Handler) -> Any:
    """What a handler returns, as the reply's payload type: None for a raw reply, or _NO_REPLY."""
    func = handler.func
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve here: described as raw
        declared = inspect.signature(func).return_annotation
        return _NO_REPLY if declared in (inspect.Signature.empty, None, "None") else None
    if "return" not in hints or hints["return"] in (None, type(None)):
        return _NO_REPLY
    returned = hints["return"]
    return None if returned in (Any, object, Message) else returned


def _rewrite_refs(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#/$defs/"):
                out[key] = "#/components/schemas/" + item[len("#/$defs/") :]
            else:
                out[key] = _rewrite_refs(item)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(item) for item in value]
    return value


def _unique(base: str, taken: dict[str, Any]) -> str:
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


# -- output ----------------------------------------------------------------------------------


def render(doc: dict[str, Any], fmt: str) -> str:
    """The document as text: ``json``, ``yaml`` (needs PyYAML) or a self-contained ``html`` page."""
    if fmt == "json":
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "yaml":
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ConfigError(
                "--format yaml needs PyYAML: pip install 'eventbus[yaml]' (or use --format json)"
            ) from None
        return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120))
    if fmt == "html":
        return _html(doc)
    raise ConfigError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _html(doc: dict[str, Any]) -> str:
    """A page that needs nothing from the network: channels, operations, and the schemas as JSON."""
    e = html.escape
    info = doc["info"]
    rows = []
    for operation_id, operation in doc["operations"].items():
        channel = doc["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]
        messages = ", ".join(m["$ref"].rsplit("/", 1)[1] for m in operation["messages"])
        rows.append(
            f"<tr><td>{e(operation['action'])}</td><td><code>{e(channel['address'])}</code></td>"
            f"<td>{e(_KIND_TITLES[channel['x-eventbus-kind']])}</td><td>{e(messages)}</td>"
            f"<td>{e(operation.get('x-eventbus-handler', operation_id))}</td><td>{e(operation['summary'])}</td></tr>"
        )
    sections = []
    for message_id, message in doc["components"]["messages"].items():
        schema = orjson.dumps(message.get("payload", {}), option=orjson.OPT_INDENT_2).decode()
        sections.append(
            f"<h3 id='message-{e(message_id)}'>{e(message.get('title', message_id))}</h3>"
            f"<p>{e(message.get('description', message.get('contentType', doc['defaultContentType'])))}</p>"
            f"<pre>{e(schema)}</pre>"
        )
    schemas = orjson.dumps(doc["components"].get("schemas", {}), option=orjson.OPT_INDENT_2).decode()
    servers = ", ".join(f"{s['protocol']}://{s['host']}{s.get('pathname', '')}" for s in doc["servers"].values())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(info["title"])} - AsyncAPI</title>
<style>body{{font-family:sans-serif;max-width:70rem;margin:2rem auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}pre{{background:#f6f6f6;padding:.6rem}}</style>
</head><body>
<h1>{e(info["title"])} <small>{e(info["version"])}</small></h1>
<p>{e(info.get("description", ""))}</p>
<p>AsyncAPI {e(doc["asyncapi"])} &middot; server: <code>{e(servers)}</code></p>
<h2>Operations</h2>
<table><tr><th>action</th><th>address</th><th>kind</th><th>message</th><th>handler</th><th>summary</th></tr>
{"".join(rows)}
</table>
<h2>Messages</h2>
{"".join(sections)}
<h2>Schemas</h2>
<pre>{e(schemas)}</pre>
</body></html>
"""
