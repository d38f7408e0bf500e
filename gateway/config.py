"""Gateway settings: one frozen dataclass, filled from command-line flags and ``COLLAB_*``
environment variables.

Every setting has a flag and a variable named after its field (``history_limit`` is
``--history-limit`` and ``COLLAB_HISTORY_LIMIT``); a flag beats the variable, the variable beats
the default. Both go through the same parser, so ``--port x`` and ``COLLAB_PORT=x`` fail with
the same message. The table :data:`OPTIONS` is the single list of them (``--help`` is built from
it, and ``gateway/README.md`` documents it).
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Serializer = Literal["json", "msgpack"]
SERIALIZERS: tuple[Serializer, ...] = ("json", "msgpack")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
ENV_PREFIX = "COLLAB_"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the flag or variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway can be told. Defaults are the contract's (port 3001, an SQLite
    file in the working directory, JSON serializer, same-origin CORS)."""

    host: str = "0.0.0.0"
    port: int = 3001
    #: Document store URL (``collab.store.open_store``): ``memory://``, a ``.db`` path, ...
    store: str = "collab.db"
    #: Redis URL for multi-node fan-out (python-socketio ``AsyncRedisManager``); None = one node.
    redis: str | None = None
    #: With ``redis``: seconds after which a silent node's users are announced offline (its
    #: presence entries expire; each node refreshes its own every third of this).
    presence_ttl: float = 30.0
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key_file: str | None = None
    #: Accepted algorithms; empty = HS256 with a secret, RS256/ES256 (by key type) with a key.
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    #: Origins allowed cross-origin (``*`` for any); empty = same origin only.
    cors_origins: tuple[str, ...] = ()
    serializer: Serializer = "json"
    log_file: str | None = None
    log_level: str = "INFO"
    #: Development mode: without a JWT secret, generate one and print a ready token.
    dev: bool = False
    #: Serve the demo page at ``/demo`` (``gateway.routes.demo``); None = on iff ``dev``.
    demo: bool | None = None
    #: This node's name in health reports; default the host name.
    node: str = field(default_factory=socket.gethostname)
    #: Versions kept for stale writes (``collab.engine.EngineConfig.history_limit``).
    history_limit: int = 1000
    #: Seconds a document may go unused before the engine drops it from memory (reloaded
    #: from the store on next use; ``collab.engine.EngineConfig.idle_seconds``); 0 = never.
    document_idle_seconds: float = 300.0
    #: Largest engine.io message or polling POST accepted, in bytes. Above the engine's 1 MiB
    #: document limit, so an oversized document is answered ``payload_too_large`` instead of
    #: the connection being dropped; polling base64-encodes binary attachments (+33%).
    max_http_buffer_size: int = 4 * 1024 * 1024
    #: Packets accepted in one polling payload (python-engineio's default of 16 is too low:
    #: an event with a binary attachment counts as two). Process-wide in python-engineio.
    max_polling_packets: int = 256
    #: Minimum interval between two relayed ``user:typing`` of one user in one document.
    typing_throttle_ms: int = 500
    #: Window over which ``document:updated`` for Yjs writes is coalesced (0 = never).
    sync_coalesce_ms: int = 50
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    #: Accept permessage-deflate when a client offers it (``socket.io-client`` does). Off: it
    #: costs ~90 KiB of zlib state per connection and a compression per recipient per event,
    #: and a broadcast's frame could no longer be shared (``gateway.outgoing``).
    ws_compression: bool = False
    #: Event loop: ``uvloop`` (libuv: cheaper socket writes and callbacks), ``asyncio``, or
    #: ``auto`` (uvloop when installed, as it is with the package on Linux and macOS).
    event_loop: str = "auto"
    #: Connection state recovery (``gateway.recovery``, docs/recovery.md): seconds a dropped
    #: client's session and missed events are kept for it to recover; 0 turns it off.
    recovery_window: float = 120.0
    # -- limits (gateway/limits.py, SECURITY.md); 0 turns a rate or a cap off --
    #: Nesting depth of a whole Socket.IO packet the JSON decoder accepts (the argument array
    #: is level 1, the payload 2, a document's ``data`` 3); deeper: ``invalid_payload``.
    max_json_depth: int = 64
    #: The engine's document limits (``collab.limits.Limits``): UTF-8 JSON size, nesting depth
    #: of ``data``, members + elements, characters in one string.
    max_document_bytes: int = 1_048_576
    max_document_depth: int = 32
    max_document_fields: int = 10_000
    max_string_length: int = 1_000_000
    #: Client events per second per connection, and the burst allowed (token bucket).
    event_rate: float = 50.0
    event_burst: int = 200
    #: Client events per second per user over all their connections to this node, and burst.
    user_event_rate: float = 100.0
    user_event_burst: int = 400
    #: Sockets one user may hold on this node; more are refused at the handshake.
    max_connections_per_user: int = 20
    #: Documents and resources one connection may have joined at once.
    max_rooms_per_connection: int = 200
    #: Packets waiting to be sent to one socket; a socket with more is disconnected.
    max_outgoing_packets: int = 1000
    #: JSON file of revoked companies and users, re-read when it changes (``auth.DenyList``).
    deny_file: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be between 0 and 65535, not {self.port}")
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}")
        if self.serializer not in SERIALIZERS:
            raise SettingsError(f"serializer must be one of {', '.join(SERIALIZERS)}")
        for name in ("history_limit", "max_http_buffer_size", "max_polling_packets"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        for name in ("typing_throttle_ms", "sync_coalesce_ms"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative")
        if self.ping_interval <= 0 or self.ping_timeout <= 0:
            raise SettingsError("ping_interval and ping_timeout must be positive")
        if not 4 <= self.max_json_depth <= 512:
            raise SettingsError("max_json_depth must be between 4 and 512")
        for name in (
            "max_document_bytes",
            "max_document_depth",
            "max_document_fields",
            "max_string_length",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        for name in (
            "event_rate",
            "event_burst",
            "user_event_rate",
            "user_event_burst",
            "max_connections_per_user",
            "max_rooms_per_connection",
            "max_outgoing_packets",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative (0 turns it off)")
        for rate, burst in (("event_rate", "event_burst"), ("user_event_rate", "user_event_burst")):
            if getattr(self, rate) > 0 and getattr(self, burst) < 1:
                raise SettingsError(f"{burst} must be at least 1 when {rate} is set")
        if self.presence_ttl <= 0:
            raise SettingsError("presence_ttl must be positive")
        if self.recovery_window < 0:
            raise SettingsError("recovery_window must not be negative (0 turns it off)")
        if self.document_idle_seconds < 0:
            raise SettingsError("document_idle_seconds must not be negative (0 turns it off)")

    @property
    def demo_enabled(self) -> bool:
        """Whether ``/demo`` is served: ``--demo``/``--no-demo`` when given, else ``dev``."""
        return self.dev if self.demo is None else self.demo

    @property
    def has_jwt_key(self) -> bool:
        """Whether tokens can be verified at all (a secret or a public key is configured)."""
        return bool(self.jwt_secret) or bool(self.jwt_public_key_file)


# -- parsing ------------------------------------------------------------------------------


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _optional(raw: str) -> str | None:
    return raw or None


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _event_loop(raw: str) -> str:
    if raw not in EVENT_LOOPS:
        raise ValueError(f"expected one of {', '.join(EVENT_LOOPS)}, got {raw!r}")
    return raw


def _serializer(raw: str) -> str:
    if raw not in SERIALIZERS:
        raise ValueError(f"expected one of {', '.join(SERIALIZERS)}, got {raw!r}")
    return raw


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the command line and the environment spell it."""

    name: str
    help: str
    parse: Callable[[str], Any] = str
    is_flag: bool = False
    #: A flag that also has a ``--no-`` form (setting it false).
    negatable: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", "interface to listen on"),
    Option("port", "TCP port", _int),
    Option("store", "document store: memory://, a .db path, sqlite:///abs.db, redis://..."),
    Option("redis", "Redis URL for multi-node fan-out", _optional),
    Option("presence_ttl", "seconds before a silent node's users go offline", _float),
    Option("jwt_secret", "HS256 shared secret", _optional),
    Option("jwt_public_key_file", "PEM public key for RS256/ES256 tokens", _optional),
    Option("jwt_algorithms", "comma-separated accepted JWT algorithms", _csv),
    Option("jwt_issuer", "required iss claim", _optional),
    Option("jwt_audience", "required aud claim", _optional),
    Option("cors_origins", "comma-separated allowed origins (* for any)", _csv),
    Option("serializer", "Socket.IO serializer: json or msgpack", _serializer),
    Option("log_file", "also write JSON log lines to this file", _optional),
    Option("log_level", "log level (DEBUG, INFO, WARNING, ...)"),
    Option("dev", "development mode: generate a JWT secret and print a token", _bool, True),
    Option("demo", "serve the demo page at /demo (default: on with --dev)", _bool, True, True),
    Option("node", "this node's name in health reports"),
    Option("history_limit", "versions kept for stale writes", _int),
    Option("document_idle_seconds", "unused documents leave memory after, s (0 = never)", _float),
    Option("max_http_buffer_size", "largest message or polling request, bytes", _int),
    Option("max_polling_packets", "packets accepted per polling request", _int),
    Option("typing_throttle_ms", "min ms between relayed user:typing per user+document", _int),
    Option("sync_coalesce_ms", "window coalescing document:updated of Yjs writes, ms", _int),
    Option("ping_interval", "engine.io ping interval, seconds", _float),
    Option("ping_timeout", "engine.io ping timeout, seconds", _float),
    Option("ws_compression", "accept permessage-deflate on websockets", _bool, True, True),
    Option("event_loop", "event loop: auto, uvloop or asyncio", _event_loop),
    Option("recovery_window", "connection state recovery window, seconds (0 = off)", _float),
    Option("max_json_depth", "nesting depth of a Socket.IO packet's JSON", _int),
    Option("max_document_bytes", "largest document, UTF-8 JSON bytes", _int),
    Option("max_document_depth", "nesting depth of a document", _int),
    Option("max_document_fields", "object members + list elements in a document", _int),
    Option("max_string_length", "characters in one string of a document", _int),
    Option("event_rate", "client events per second per connection (0 = off)", _float),
    Option("event_burst", "burst of client events per connection", _int),
    Option("user_event_rate", "client events per second per user on this node (0 = off)", _float),
    Option("user_event_burst", "burst of client events per user", _int),
    Option("max_connections_per_user", "sockets per user on this node (0 = no cap)", _int),
    Option("max_rooms_per_connection", "documents joined per connection (0 = no cap)", _int),
    Option("max_outgoing_packets", "packets queued per socket before it is cut (0 = off)", _int),
    Option("deny_file", "JSON file of revoked companies and users (re-read on change)", _optional),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to ``parser`` (values are parsed by :func:`settings_from`)."""
    defaults = Settings()
    group = parser.add_argument_group("settings", "each flag is also a COLLAB_* variable")
    for opt in OPTIONS:
        default = getattr(defaults, opt.name)
        hidden = opt.name in ("jwt_secret", "node") or default in (None, ())
        shown = "" if hidden else f"; default {default!r}"
        text = f"{opt.help} (env {opt.env}{shown})"
        if opt.is_flag:
            group.add_argument(
                opt.flag, dest=opt.name, action="store_const", const="true", default=None, help=text
            )
            if opt.negatable:
                group.add_argument(
                    "--no-" + opt.flag[2:],
                    dest=opt.name,
                    action="store_const",
                    const="false",
                    default=None,
                    help=f"turn {opt.flag} off",
                )
        else:
            group.add_argument(
                opt.flag, dest=opt.name, default=None, metavar=opt.name.upper(), help=text
            )


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed flags, then ``COLLAB_*`` variables, then defaults."""
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = getattr(args, opt.name, None)
        source = opt.flag
        if raw is None:
            raw, source = environ.get(opt.env), opt.env
        if raw is None:
            continue
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    try:
        return Settings(**values)
    except SettingsError as exc:
        raise SettingsError(f"invalid settings: {exc}") from None


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Settings from a full argument list (no subcommand) and an environment."""
    parser = argparse.ArgumentParser(prog="collab-gateway")
    add_arguments(parser)
    return settings_from(parser.parse_args(list(argv)), environ)
