"""Payloads decoded by the handler's annotation, and typed objects encoded for publishing.

    @on("orders")
    async def store(order: Order, ctx: Context) -> None: ...

The first parameter's annotation says what the handler receives. ``Message`` (or a subclass such
as ``StreamMessage``), ``Any`` or no annotation keep the raw message, exactly as before; anything
else is decoded from the payload before the call:

- ``msgspec.Struct``: ``msgspec.json.Decoder`` (the fast path);
- a pydantic v2 model: ``model_validate_json``;
- dataclasses, ``TypedDict`` and generic containers (``list[Order]``, ``dict[str, int]``): msgspec
  when it is installed, else pydantic's ``TypeAdapter``; with neither it is a load error;
- ``dict`` / ``list``: the payload parsed as JSON (orjson) and checked to be an object / array;
- ``str``: the payload as UTF-8; ``bytes``: the payload as it is;
- ``int`` / ``float``: the payload as a decimal number (the olympics order id, ``PUBLISH ch 42``).

A batch handler (``batch=Batch(...)``) takes a list: ``list[Message]`` (or no annotation) for the
raw messages, ``list[Order]`` for each message decoded as an ``Order``; its envelope parameter is a
``list[Message]``. Without ``batch=``, ``list[Order]`` keeps its meaning: one message whose payload
is a JSON array of orders.

A typed handler may take the envelope (channel, pattern, raw bytes, a stream entry's id) as a
third parameter annotated ``Message``: ``async def store(order: Order, ctx: Context, msg: Message)``.
A parameter rather than ``ctx.message`` because one context serves every message a handler works on
at once (``concurrency > 1``), and a parameter costs nothing to the handlers that do not ask.

Everything here runs at load time, once per handler: the signature is read, the decoder built
(a msgspec Decoder, a TypeAdapter) and shared by every handler of the router that takes the same
type. A message that reaches several handlers of one type is decoded once: the value is cached on
the message (so handlers sharing a type share one object: treat decoded payloads as read-only).

A payload that does not decode raises :class:`~eventbus.PayloadError`, which the worker treats as a
refusal: never retried, logged, counted as rejected and dead-lettered. Its text has the field
path and what was expected, never the payload's values (they may be personal data).
"""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import datetime
import enum
import inspect
import re
import sys
import typing
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from eventbus._errors import LoadError, PayloadError
from eventbus._message import Message

# The payload libraries eventbus supports without requiring them, each an extra of the same name.
OPTIONAL_PAYLOAD_LIBRARIES = ("msgspec", "pydantic")

Invoke = Callable[[Message, Any], Awaitable[Any]]

# Text between single quotes in a validation message is a value taken from the payload
# ("Invalid enum value 'gold'"); field paths use backticks or dotted locations and stay.
_QUOTED = re.compile(r"'[^']*'")


class Decoder:
    """Turns a message's payload into one annotated type. Built once per type and router."""

    __slots__ = ("annotation", "codec", "decode", "label", "users")

    def __init__(self, annotation: Any, label: str, codec: str, decode: Callable[[Message], Any]) -> None:
        self.annotation = annotation
        self.label = label  # for people: "Order", "int", "list[Order]"
        self.codec = codec  # which library decodes it: msgspec, pydantic, json, text, bytes, number
        self.decode = decode  # raises PayloadError
        self.users = 0  # handlers that take this type: above 1, decoded values are cached

    def cached(self, msg: Message) -> Any:
        """The decoded payload, decoded at most once per message whatever the number of handlers."""
        cache: dict[Decoder, Any] | None = getattr(msg, "_payloads", None)
        if cache is None:
            cache = msg._payloads = {}
        elif self in cache:
            return cache[self]
        value = cache[self] = self.decode(msg)
        return value

    def __repr__(self) -> str:
        return f"<Decoder {self.label} ({self.codec})>"


@dataclasses.dataclass(frozen=True, slots=True)
class PayloadPlan:
    """How a typed handler is called: its first argument decoded, the envelope third if asked."""

    decoder: Decoder
    envelope: bool

    @property
    def label(self) -> str:
        return self.decoder.label


def plan_call(
    func: Callable[..., Any], decoders: dict[Any, Decoder], name: str, *, batch: bool = False
) -> PayloadPlan | None:
    """Read ``func``'s signature: None for a raw-message handler, else how to decode its payload.

    With ``batch``, the first parameter is a list and the plan decodes each of its messages.
    Raises :class:`LoadError` (one line) for annotations that cannot be resolved or decoded.
    """
    try:
        # Annotations stay strings here: only the payload's (and the envelope's) are resolved below,
        # so a handler whose `ctx: Context` is imported under TYPE_CHECKING loads as it always did.
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None  # no signature to read (a builtin): called with the raw message, as always
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not positional:
        return None
    annotation = _resolve(positional[0].annotation, func, name)
    if batch:
        annotation = _batch_element(annotation, name)
    elif _is_message_type(_list_element(annotation)):
        raise LoadError(
            f"handler {name} takes a {type_label(annotation)} but has no batch=: give it batch=Batch(...) to "
            "receive batches (without it, a list[...] payload is one message holding a JSON array)"
        )
    if _is_raw(annotation):
        return None
    # Called as func(payload, ctx) or func(payload, ctx, msg): say so now rather than fail per message.
    takes_more = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values())
    if len(positional) < 2 and not takes_more:
        raise LoadError(f"handler {name}: a typed handler takes (payload, ctx), optionally a third `msg: Message`")
    envelope = len(positional) >= 3 and _is_envelope(_resolve(positional[2].annotation, func, name), batch)
    if len(positional) >= 3 and not envelope and positional[2].default is inspect.Parameter.empty:
        wanted = "list[Message]" if batch else "Message"
        raise LoadError(f"handler {name}: its third parameter {positional[2].name!r} must be annotated {wanted}")
    try:
        decoder = decoders.get(annotation)
        if decoder is None:
            decoder = decoders[annotation] = build_decoder(annotation, name)
    except TypeError:  # an unhashable annotation (Annotated with a dict in it): a decoder of its own
        decoder = build_decoder(annotation, name)
    decoder.users += 1
    return PayloadPlan(decoder, envelope)


# Names that mean "the raw message" even when they cannot be resolved (imported under TYPE_CHECKING).
_RAW_NAMES = frozenset({"Message", "StreamMessage", "Any", "object"})
# The same inside a list, for batch handlers: ``list[Message]``, ``Sequence[eventbus.Message]``.
_RAW_LIST = re.compile(r"(?:[\w.]+\.)?(?:list|List|Sequence)\[(?:[\w.]+\.)?(?:Message|StreamMessage|Any|object)\]")
_LIST_ORIGINS = (list, collections.abc.Sequence)


def _list_element(annotation: Any) -> Any:
    """``X`` for ``list[X]`` / ``Sequence[X]``, ``Any`` for a bare ``list``; None for anything else."""
    if annotation is list or annotation is collections.abc.Sequence:
        return Any
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in _LIST_ORIGINS and len(args) == 1:
        return args[0]
    return None


def _batch_element(annotation: Any, name: str) -> Any:
    """What each message of a batch handler's list is decoded as (raw: ``Any``); LoadError if not a list."""
    if _is_raw(annotation):
        return Any
    element = _list_element(annotation)
    if element is None:
        raise LoadError(
            f"handler {name} has batch=, so it takes a list: annotate its first parameter list[Message] or "
            f"list[<payload type>], not {type_label(annotation)}"
        )
    return element


def _is_envelope(annotation: Any, batch: bool) -> bool:
    if not batch:
        return _is_message_type(annotation)
    element = _list_element(annotation)
    return element is not None and _is_message_type(element)


def _resolve(annotation: Any, func: Callable[..., Any], name: str) -> Any:
    """A parameter's annotation as a type, evaluating it when it is a string (PEP 563)."""
    if not isinstance(annotation, str):
        return annotation
    # A function's module globals; for a callable object, those of its class's __call__.
    namespace = getattr(inspect.unwrap(func), "__globals__", None)
    if namespace is None:
        namespace = getattr(inspect.unwrap(type(func).__call__), "__globals__", {})
    try:
        # What typing.get_type_hints does: the handler's own annotation, in its module.
        return eval(annotation, namespace)
    except NameError as exc:
        if annotation.rpartition(".")[2] in _RAW_NAMES:
            return Any  # a raw-message handler whose Message import is for type checkers only
        if _RAW_LIST.fullmatch(annotation.replace(" ", "")):
            return list[Message]  # the same for a batch handler
        # A payload type imported only under TYPE_CHECKING, or from a library that is not installed:
        # say which handler, at load time, not at the first message.
        raise LoadError(f"handler {name}: cannot resolve its annotations: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any broken annotation is this handler's load error
        raise LoadError(f"handler {name}: cannot resolve the annotation {annotation!r}: {exc}") from None


def build_invoke(plan: PayloadPlan, func: Callable[..., Any], is_async: bool, keyed: bool) -> Invoke:
    """The worker's ``invoke(msg, ctx)`` for a typed handler: decode, then call.

    It returns the handler's coroutine rather than awaiting it, so a typed call costs the decode
    and no extra coroutine frame. A decode error is raised here, inside the worker's try.
    """
    decoder = plan.decoder
    # Cache only where it can pay: several handlers share the type, or the key function already
    # decoded the payload to find the message's key.
    decode = decoder.cached if keyed or decoder.users > 1 else decoder.decode
    if is_async:
        if plan.envelope:
            return lambda msg, ctx: func(decode(msg), ctx, msg)
        return lambda msg, ctx: func(decode(msg), ctx)
    # A plain `def` handler runs in a worker thread; its payload is decoded on the loop first, so
    # an invalid payload is refused the same way for both kinds.
    if plan.envelope:
        return lambda msg, ctx: asyncio.to_thread(func, decode(msg), ctx, msg)
    return lambda msg, ctx: asyncio.to_thread(func, decode(msg), ctx)


def describe_payload(handler: Any) -> str:
    """What a handler receives, for ``eventbus routes``: ``Message`` or ``Order(msgspec)``."""
    plan: PayloadPlan | None = handler.payload
    batch = handler.options.batch is not None
    if plan is None:
        return "list[Message]" if batch else "Message"
    label = f"list[{plan.label}]" if batch else plan.label
    envelope = "list[Message]" if batch else "Message"
    return f"{label}({plan.decoder.codec}){'+' + envelope if plan.envelope else ''}"


def describe_key(key: Any) -> str:
    """`` key=customer`` for a handler ordered per key, else nothing."""
    if key is None:
        return ""
    return f" key={key if isinstance(key, str) else getattr(key, '__qualname__', repr(key))}"


def _is_raw(annotation: Any) -> bool:
    # `object` promises nothing about the payload: the handler gets the message, as before.
    return (
        annotation is inspect.Parameter.empty
        or annotation is Any
        or annotation is object
        or _is_message_type(annotation)
    )


def _is_message_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Message)


def type_label(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def build_decoder(annotation: Any, name: str) -> Decoder:
    """The decoder for one annotation; :class:`LoadError` if it is not a supported payload type."""
    label = type_label(annotation)
    if annotation is bytes:
        return Decoder(annotation, label, "bytes", _bytes)
    if annotation is str:
        return Decoder(annotation, label, "text", _text)
    if annotation is int or annotation is float:
        return Decoder(annotation, label, "number", _number(annotation))
    if annotation is dict or annotation is list:
        return Decoder(annotation, label, "json", _json_container(annotation))
    if annotation is bool:
        raise LoadError(f"handler {name}: payload type bool is ambiguous; take str, int or a model")
    if _is_msgspec_struct(annotation):
        return Decoder(annotation, label, "msgspec", _msgspec_decode(annotation, label, name))
    if _is_pydantic_model(annotation):
        return Decoder(annotation, label, "pydantic", _pydantic_decode(annotation, label))
    if not _supported(annotation):
        raise LoadError(
            f"handler {name}: {label} is not a supported payload type: annotate with Message, a msgspec "
            "Struct, a pydantic model, a dataclass, a TypedDict, dict, list, str, bytes, int or float"
        )
    # Dataclasses, TypedDicts, list[X], dict[str, X], unions...: the fast library when there is one.
    if "msgspec" in sys.modules or _importable("msgspec"):
        return Decoder(annotation, label, "msgspec", _msgspec_decode(annotation, label, name))
    if "pydantic" in sys.modules or _importable("pydantic"):
        return Decoder(annotation, label, "pydantic", _adapter_decode(annotation, label, name))
    raise LoadError(
        f"handler {name}: decoding a {label} payload needs msgspec or pydantic: pip install 'eventbus[msgspec]'"
    )


_SCALARS = (bytes, str, int, float, bool, dict, list, tuple, type(None), datetime.datetime, datetime.date, uuid.UUID)


def _supported(annotation: Any) -> bool:
    """Types both msgspec and pydantic decode from JSON; anything else would fail per message."""
    if annotation is Any or annotation in _SCALARS:
        return True
    if isinstance(annotation, type) and (
        _is_msgspec_struct(annotation)
        or _is_pydantic_model(annotation)
        or dataclasses.is_dataclass(annotation)
        or typing.is_typeddict(annotation)
        or issubclass(annotation, enum.Enum)
    ):
        return True
    origin = typing.get_origin(annotation)
    if origin is None:
        return False
    if origin is typing.Literal:
        return True
    return all(arg is Ellipsis or _supported(arg) for arg in typing.get_args(annotation))


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _is_msgspec_struct(annotation: Any) -> bool:
    # Never import msgspec to ask: a Struct can only exist if its module has been imported.
    msgspec = sys.modules.get("msgspec")
    return msgspec is not None and isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _is_pydantic_model(annotation: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _invalid(msg: Message, label: str, detail: str) -> PayloadError:
    return PayloadError(f"payload on {msg.channel!r} is not a valid {label} ({len(msg.data)} bytes): {detail}")


def _bytes(msg: Message) -> bytes:
    return msg.data


def _text(msg: Message) -> str:
    return msg.text


def _number(kind: type[int] | type[float]) -> Callable[[Message], Any]:
    what = "an integer" if kind is int else "a number"

    def decode(msg: Message) -> Any:
        try:
            return kind(msg.data)
        except ValueError:
            # int()'s own message quotes the payload: say what was expected instead.
            raise _invalid(msg, kind.__name__, f"not {what}") from None

    return decode


def _json_container(kind: type[dict[Any, Any]] | type[list[Any]]) -> Callable[[Message], Any]:
    what = "a JSON object" if kind is dict else "a JSON array"

    def decode(msg: Message) -> Any:
        value = msg.json()
        if not isinstance(value, kind):
            raise _invalid(msg, kind.__name__, f"expected {what}, got {type(value).__name__}")
        return value

    return decode


def _msgspec_decode(annotation: Any, label: str, name: str) -> Callable[[Message], Any]:
    import msgspec

    try:
        decoder = msgspec.json.Decoder(annotation)
    except TypeError as exc:
        raise LoadError(f"handler {name}: {label} is not a supported payload type: {exc}") from None
    decode_json = decoder.decode
    errors = (msgspec.ValidationError, msgspec.DecodeError)

    def decode(msg: Message) -> Any:
        try:
            return decode_json(msg.data)
        except errors as exc:
            raise _invalid(msg, label, _QUOTED.sub("'…'", str(exc))) from None

    return decode


def _pydantic_errors(exc: Any) -> str:
    # include_input=False: the error list keeps the location and the rule, never the value.
    parts = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "$"
        parts.append(f"{where}: {error['msg']} ({error['type']})")
    return "; ".join(parts)


def _pydantic_decode(model: Any, label: str) -> Callable[[Message], Any]:
    return _pydantic_validating(model.model_validate_json, label)


def _adapter_decode(annotation: Any, label: str, name: str) -> Callable[[Message], Any]:
    import pydantic

    try:
        adapter = pydantic.TypeAdapter(annotation)
    except pydantic.PydanticSchemaGenerationError as exc:
        raise LoadError(f"handler {name}: {label} is not a supported payload type: {exc}") from None
    return _pydantic_validating(adapter.validate_json, label)


def _pydantic_validating(validate: Callable[[bytes], Any], label: str) -> Callable[[Message], Any]:
    """A decoder that validates the payload's JSON with pydantic, refusing it with the field paths."""
    import pydantic

    error_type = pydantic.ValidationError

    def decode(msg: Message) -> Any:
        try:
            return validate(msg.data)
        except error_type as exc:
            raise _invalid(msg, label, _pydantic_errors(exc)) from None

    return decode


# -- publishing ------------------------------------------------------------------------------


def encode_default(obj: Any) -> Any:
    """orjson's ``default=``: what it cannot serialize itself (it does dataclasses natively).

    Called only for objects orjson does not know, so plain dicts pay nothing for it.
    """
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and isinstance(obj, msgspec.Struct):
        return msgspec.to_builtins(obj)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        # By alias: that is what model_validate_json expects on the receiving side.
        return obj.model_dump(mode="json", by_alias=True)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def encode_json(data: Any) -> bytes:
    return orjson.dumps(data, default=encode_default)


def encode_payload(data: Any) -> bytes:
    """bytes as they are, str as UTF-8, numbers as their decimal text, anything else as JSON
    (typed objects included: msgspec Structs, pydantic models, dataclasses).

    Numbers are sent as text (not JSON) because that is what ``redis-cli PUBLISH ch 42`` and
    redis-py send, so a handler sees the same bytes whoever published.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, bool):
        # bool is an int subclass; JSON's true/false is the unsurprising reading.
        return b"true" if data else b"false"
    if isinstance(data, (int, float)):
        return repr(data).encode("ascii")
    try:
        # Typed objects (msgspec Structs, pydantic models) go through the codecs that decode them
        # (eventbus._payloads); orjson serializes dataclasses by itself.
        return orjson.dumps(data, default=encode_default)
    except TypeError as exc:
        raise PayloadError(f"cannot publish a {type(data).__name__}: {exc}") from None


def stream_fields(data: Any) -> dict[str, Any]:
    """The fields XADD stores: a flat dict as it is, any other payload encoded in ``data``."""
    if isinstance(data, dict):
        if not data:
            raise PayloadError("a stream entry needs at least one field")
        fields: dict[str, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str) or not isinstance(value, (str, bytes, int, float)) or isinstance(value, bool):
                raise PayloadError(
                    f"stream fields must map str to str, bytes or numbers; field {key!r} is a {type(value).__name__} "
                    "(wrap nested data: append(stream, {'data': orjson.dumps(obj)}))"
                )
            fields[key] = value
        return fields
    return {"data": encode_payload(data)}


# -- schemas, for the AsyncAPI document ------------------------------------------------------


def json_schema(annotation: Any) -> dict[str, Any]:
    """A JSON Schema for a payload type (msgspec or pydantic produce it; simple types by hand)."""
    simple = {bytes: {"type": "string", "format": "binary"}, str: {"type": "string"}, int: {"type": "integer"}}
    if annotation in simple:
        return dict(simple[annotation])
    if annotation is float:
        return {"type": "number"}
    if annotation is dict:
        return {"type": "object"}
    if annotation is list:
        return {"type": "array"}
    if _is_pydantic_model(annotation):
        return dict(annotation.model_json_schema(ref_template="#/$defs/{model}"))
    if "msgspec" in sys.modules or _importable("msgspec"):
        import msgspec

        return dict(msgspec.json.schema(annotation))
    import pydantic

    return dict(pydantic.TypeAdapter(annotation).json_schema(ref_template="#/$defs/{model}"))
