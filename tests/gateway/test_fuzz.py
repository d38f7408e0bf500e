"""Fuzzing every client event through a real gateway: whatever a client sends (wrong types,
missing and extra fields, lists for objects, binary for JSON, lone surrogates, NUL, RTL marks,
huge and non-finite numbers, nesting up to 2,000 deep), it gets a well-formed answer, the
gateway stays up, and a refused event changes no document.

Hypothesis drives synchronous tests; the gateway and its clients live on an event loop of
their own, in a thread (:class:`LiveGateway`), started once per module and reused across
examples. The fuzz clients encode with :class:`FuzzJSON`, which writes what no JSON library
would: ``NaN`` literals, 150-digit numbers, arrays 2,000 deep (:class:`Raw` text, sent as is).

Also here: properties of ``gateway.jsoncodec`` itself (same values as the standard module).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
import socketio
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import Settings
from gateway.jsoncodec import JsonCodec, Oversized
from gateway.wire import MALFORMED_EVENT
from tests.gateway.conftest import SECRET, Client, Server

T = TypeVar("T")

#: The contract's error codes.
CODES = {
    "unauthenticated",
    "forbidden",
    "not_found",
    "invalid_payload",
    "payload_too_large",
    "rate_limited",
    "version_ahead",
    "history_gone",
    "conflict_pending",
    "internal",
}


# -- the harness (also used by test_isolation_property) --------------------------------------


class LiveGateway:
    """A gateway on a free port and an event loop of its own, in a daemon thread, so that
    synchronous hypothesis tests (``@given``, state machines) can drive it with :meth:`run`."""

    def __init__(self, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: Server = self.run(self._start(overrides))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, overrides: dict[str, Any]) -> Server:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "store": "memory://",
            "jwt_secret": SECRET,
            "node": "live",
            **overrides,
        }
        app = create_app(Settings(**values))
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return Server(app, runner, f"http://127.0.0.1:{runner.addresses[0][1]}")

    async def health(self) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.server.url + "/health/websocket") as r,
        ):
            return r.status

    def close(self) -> None:
        async def stop() -> None:
            await self.server.close()
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def well_formed_ack(ack: Any) -> None:
    """``{ok: true, ...}`` or ``{ok: false, error: {code, message}}`` with a contract code."""
    assert isinstance(ack, dict), ack
    assert isinstance(ack.get("ok"), bool), ack
    if not ack["ok"]:
        well_formed_error(ack["error"])


def well_formed_error(error: Any) -> None:
    assert isinstance(error, dict), error
    assert error.get("code") in CODES, error
    assert isinstance(error.get("message"), str) and error["message"], error
    # A fuzzed payload is the client's fault, never an unhandled exception in the gateway.
    assert error["code"] != "internal", error


# -- what the fuzz clients send ----------------------------------------------------------------


class Raw:
    """JSON text written as is by :class:`FuzzJSON`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        members = (json.dumps(str(k)) + ":" + encode(v) for k, v in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(v) for v in value) + "]"
    # Strings (lone surrogates escaped as \\udXXX), any int, NaN / Infinity, bool, None.
    return json.dumps(value)


class FuzzJSON:
    """The JSON module of the fuzz clients' packets."""

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        return encode(value)

    @staticmethod
    def loads(text: str | bytes, **kwargs: Any) -> Any:
        return json.loads(text)


class FuzzPacket(socketio.packet.Packet):  # type: ignore[misc]
    json = FuzzJSON


EDGE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202e",  # right-to-left override
    "\u200f\u202b",  # RTL mark, RTL embedding
    "\ud800",
    "\udfff",
    "x\ud83d",
    "😀",
    "\ufeff",
    "\u2028",
    "_placeholder",
    "__proto__",
    "document:join",
    "x" * 300,
]


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each drawn in proportion to its weight (``st.one_of`` is not)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


strings = st.one_of(
    st.text(max_size=12),
    st.sampled_from(EDGE_STRINGS),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
)


def _deep(n: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * n + "]" * n)
    return Raw('{"a":' * n + "1" + "}" * n)


raw_values = st.one_of(
    st.sampled_from(
        [
            Raw("NaN"),
            Raw("Infinity"),
            Raw("-Infinity"),
            Raw("9" * 150),
            Raw("-" + "9" * 101),
            Raw("1e400"),
            Raw("-0"),
            Raw("123456789012345678901234567890"),
        ]
    ),
    st.builds(_deep, st.integers(30, 2_000), st.sampled_from(["array", "object"])),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.sampled_from([0, -1, 2**53, 2**53 - 1, -(2**63) - 1, 2**64]),
)
plain_scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
#: JSON values (with the edge cases of strings and numbers).
plain = st.recursive(
    plain_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
    ),
    max_leaves=12,
)
#: Anything a client can send: JSON, binary attachments, raw NaN / deep / 150-digit text.
values = st.recursive(
    st.one_of(plain_scalars, st.binary(max_size=8), raw_values),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
    ),
    max_leaves=8,
)
objects = st.one_of(
    st.dictionaries(strings, plain, max_size=5),
    st.dictionaries(st.sampled_from(["notes", "title", "items"]), plain, max_size=3),
)

DOCUMENTS = ("fz-doc", "fz-manual", "fz-b")  # fz-b belongs to the other company
RESOURCES = ("fz-res",)
pool = st.sampled_from(DOCUMENTS + RESOURCES)
ids = weighted((6, pool), (1, strings), (1, values))
#: Stands for the document's current version (so that some writes get to the engine).
CURRENT = object()
versions = weighted((4, st.just(CURRENT)), (1, st.integers(-2, 5)), (1, values))
sync_messages = st.one_of(
    st.sampled_from([b"\x00\x00\x01\x00", b"\x00\x01\x00", b"\x00\x02\x02\x00\x00", b"\x01"]),
    st.binary(max_size=24),
    values,
)
strategies = st.one_of(st.sampled_from(["merge", "manual", "last-write-wins", "x"]), values)
data = weighted((4, objects), (1, values))

#: Per event: (required fields, optional fields) of its payload.
FIELDS: dict[str, tuple[dict[str, st.SearchStrategy[Any]], dict[str, st.SearchStrategy[Any]]]] = {
    "document:join": (
        {"documentId": ids},
        {
            "version": versions,
            "strategy": strategies,
            "textFields": st.one_of(st.lists(strings, max_size=3), values),
        },
    ),
    "document:leave": ({"documentId": ids}, {}),
    "resource:join": ({"resourceId": ids}, {"version": versions, "strategy": strategies}),
    "resource:leave": ({"resourceId": ids}, {}),
    "document:update": (
        {"documentId": ids, "version": versions, "data": data},
        {"opId": st.one_of(strings, values), "userId": values},
    ),
    "resource:update": (
        {"resourceId": ids, "version": versions, "data": data},
        {
            "timestamp": st.one_of(
                st.sampled_from(["2024-01-15T10:30:00.000Z", "2024-01-15T10:30:00", "nope"]),
                numbers,
                values,
            ),
            "opId": st.one_of(strings, values),
        },
    ),
    "conflict:resolve": (
        {"conflictId": st.one_of(strings, values), "resolvedValue": data},
        {"documentId": ids, "resourceId": ids},
    ),
    "user:typing": ({"documentId": ids}, {"userName": values}),
    "document:sync": ({"documentId": ids, "message": sync_messages}, {}),
}
EVENTS = [*FIELDS, "no:such:event", "disconnect", "connect", MALFORMED_EVENT]


def payloads(event: str) -> st.SearchStrategy[Any]:
    """Mostly the event's own shape (so that the engine sees fuzzed content), else anything:
    fields missing, extra, of any type; lists, scalars or binary for the whole payload."""
    required, optional = FIELDS.get(event, ({"documentId": ids}, {}))
    extras = st.dictionaries(strings, plain, max_size=2)
    shaped = st.builds(
        lambda d, x: {**x, **d}, st.fixed_dictionaries(required, optional=optional), extras
    )
    wild = st.builds(
        lambda d, x: {**x, **d},
        st.fixed_dictionaries({}, optional={**required, **optional}),
        st.dictionaries(strings, values, max_size=2),
    )
    return weighted((6, shaped), (1, wild), (1, values))


# -- the fuzz run ------------------------------------------------------------------------------


class Fuzz:
    """The live gateway, two companies' fuzz clients, and what their documents hold."""

    def __init__(self) -> None:
        self.live = LiveGateway(event_rate=0, user_event_rate=0, typing_throttle_ms=0)
        self.alice = self.live.run(self._client("alice", "fz-A"))
        self.bob = self.live.run(self._client("bob", "fz-B"))
        self.tracked: set[tuple[str, str]] = {("document", d) for d in DOCUMENTS} | {
            ("resource", r) for r in RESOURCES
        }
        self.live.run(self._join_all())

    async def _client(self, sub: str, company: str) -> Client:
        return await self.live.server.client(sub, company, serializer=FuzzPacket)  # type: ignore[arg-type]

    async def _join_all(self) -> None:
        gw = self.live.server.gw
        wanted = [
            (self.alice, "document:join", {"documentId": "fz-doc", "textFields": ["notes"]}),
            (self.alice, "document:join", {"documentId": "fz-manual", "strategy": "manual"}),
            (self.alice, "resource:join", {"resourceId": "fz-res"}),
            (self.bob, "document:join", {"documentId": "fz-b"}),
        ]
        for client, event, payload in wanted:
            kind, doc_id = event.split(":")[0], next(iter(payload.values()))
            if f"{kind}:{doc_id}" not in gw.sio.rooms(client.sid):
                ack = await client.call(event, payload)
                assert ack["ok"], ack

    async def snapshot(self) -> dict[Any, Any]:
        """Every tracked document's state, and the ids each company's store lists."""
        gw = self.live.server.gw
        out: dict[Any, Any] = {}
        for company in ("fz-A", "fz-B"):
            metas = await gw.engine.store.list_documents(company)
            out[company] = sorted((m.kind, m.id) for m in metas)
            for m in metas:
                if (m.kind, m.id) in self.tracked:
                    view = await gw.engine.get(m.kind, m.id, company_id=company)
                    out[(m.kind, m.id)] = (
                        view.version,
                        view.data,
                        [c.to_json() for c in view.conflicts],
                        m.strategy,
                        m.text_fields,
                    )
        return out

    async def version(self, kind: str, doc_id: str) -> int:
        company = "fz-B" if doc_id == "fz-b" else "fz-A"
        view = await self.live.server.gw.engine.get(kind, doc_id, company_id=company)  # type: ignore[arg-type]
        return view.version

    async def example(self, client: Client, event: str, args: tuple[Any, ...], acked: bool) -> None:
        await self._join_all()
        args = tuple([await self._resolve(a) for a in args])
        before = await self.snapshot()
        if acked:
            ack = await client.sio.call(event, args if len(args) != 1 else args[0], timeout=10)
            well_formed_ack(ack)
            refused = not ack["ok"]
        else:
            await client.sio.emit(event, args if len(args) != 1 else args[0])
            await client.barrier()
            errors = client.received("error")
            named = MALFORMED_EVENT if event in ("connect", "disconnect") else event[:256]
            for error in errors:
                well_formed_error(error)
                assert error["event"] == named
            refused = bool(errors)
        for queue in client.queues.values():  # room events of successful writes: not checked
            while not queue.empty():
                queue.get_nowait()
        if refused:
            assert await self.snapshot() == before, f"refused {event} changed a document"
        else:
            for arg in args:
                if isinstance(arg, dict):
                    for key, kind in (("documentId", "document"), ("resourceId", "resource")):
                        if isinstance(arg.get(key), str):
                            self.tracked.add((kind, arg[key]))

    async def _resolve(self, arg: Any) -> Any:
        if not isinstance(arg, dict) or arg.get("version") is not CURRENT:
            return arg
        for key, kind, known in (
            ("documentId", "document", DOCUMENTS),
            ("resourceId", "resource", RESOURCES),
        ):
            doc_id = arg.get(key)
            if doc_id in known:
                return {**arg, "version": await self.version(kind, doc_id)}
        return {**arg, "version": 0}

    def close(self) -> None:
        assert self.live.run(self.live.health()) == 200
        self.live.close()


@pytest.fixture(scope="module")
def fuzz() -> Iterator[Fuzz]:
    f = Fuzz()
    yield f
    f.close()


@pytest.mark.parametrize("event", EVENTS)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_event_answers_every_payload(fuzz: Fuzz, event: str, data: st.DataObject) -> None:
    client = data.draw(st.sampled_from([fuzz.alice, fuzz.bob]), label="client")
    shape = data.draw(st.sampled_from(["one", "one", "one", "none", "two"]), label="shape")
    args: tuple[Any, ...]
    if shape == "none":
        args = ()
    elif shape == "one":
        args = (data.draw(payloads(event), label="payload"),)
    else:
        args = (data.draw(payloads(event)), data.draw(values))
    acked = data.draw(st.booleans(), label="acked")
    fuzz.live.run(fuzz.example(client, event, args, acked))
    assert client.sio.connected


@settings(max_examples=30, deadline=None)
@given(name=st.one_of(st.text(max_size=300), st.sampled_from(EDGE_STRINGS)), payload=values)
def test_unknown_event_names(fuzz: Fuzz, name: str, payload: Any) -> None:
    fuzz.live.run(fuzz.example(fuzz.alice, name, (payload,), True))


def test_the_gateway_survived(fuzz: Fuzz) -> None:
    assert fuzz.live.run(fuzz.live.health()) == 200
    assert len(fuzz.live.server.gw.sessions) == 2


# -- jsoncodec ---------------------------------------------------------------------------------

codec = JsonCodec(max_depth=64)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**99), max_value=10**99),
        st.floats(),
        strings,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equality, NaN equal to NaN and types compared (1 is not 1.0, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(value=json_values, ascii_only=st.booleans())
def test_codec_decodes_what_the_standard_module_decodes(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert same(codec.loads(text), json.loads(text))
    assert same(codec.loads(text.encode("utf-8", "surrogatepass")), json.loads(text))


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_codec_encodes_what_the_standard_module_encodes(value: Any) -> None:
    text = codec.dumps(value, separators=(",", ":"))
    standard = json.dumps(value, separators=(",", ":"))
    if "NaN" in standard or "Infinity" in standard:
        return  # written null (as JSON.stringify does): a documented difference
    # The standard module's value (a surrogate pair spelled as two code points reads back as
    # one character, from either text).
    assert same(json.loads(text), json.loads(standard))


@given(depth=st.integers(65, 5_000), kind=st.sampled_from(["array", "object"]))
@settings(max_examples=30, deadline=None)
def test_codec_refuses_deep_texts_without_recursing(depth: int, kind: str) -> None:
    text = '["document:update",' + _deep(depth, kind).text + "]"
    decoded = codec.loads(text)
    assert decoded[0] == "document:update"
    assert isinstance(decoded[1], Oversized)
    assert "nested deeper than 64" in decoded[1].reason
    bare = codec.loads(_deep(depth, kind).text)
    assert isinstance(bare, Oversized)


def test_codec_details() -> None:
    assert isinstance(codec.loads('["e", ' + "1" * 101 + "]")[1], Oversized)
    assert codec.loads('["e", ' + "1" * 100 + "]") == ["e", int("1" * 100)]
    assert codec.loads("[" * 64 + "]" * 64) == json.loads("[" * 64 + "]" * 64)
    with pytest.raises(ValueError):
        codec.loads("probe")  # python-engineio relies on it (websocket upgrade probe)
    with pytest.raises(ValueError):
        codec.loads("[1,]")
    assert codec.dumps({"a": float("nan"), 1: "x"}) == '{"a":null,"1":"x"}'
    assert codec.dumps("\ud800") == '"\\ud800"'
    assert codec.dumps(2**70) == str(2**70)
    assert codec.dumps({"a": 1}, indent=1) == json.dumps({"a": 1}, indent=1)
    with pytest.raises(ValueError):
        JsonCodec(max_depth=0)
