"""Who is connecting: JWT verification into an :class:`Identity`, and token minting.

A token is HS256 with a shared secret, or RS256/ES256 with a public key (CONTRACT.md,
"Authentication"); claims ``sub``, ``companyId`` and ``exp`` are required, ``name`` and ``role``
optional, ``iss``/``aud`` checked when configured. Every refusal is an
:class:`AuthenticationFailed`, a python-socketio ``ConnectionRefusedError`` whose message is
``authentication failed: <reason>``: raised from the connect handler, that message is exactly
what the client's ``connect_error`` shows. The HTTP routes answer 401 with the same text.

The operator's :class:`DenyList` (revoked companies and users, ``--deny-file``) is checked by
the same :meth:`TokenVerifier.verify`, after the signature: a valid token of a revoked
company or user is refused ``authentication failed: revoked``, on sockets and HTTP alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import socketio.exceptions
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from collab.model import Author
from gateway.config import Settings, SettingsError

REQUIRED_CLAIMS = ("sub", "companyId", "exp")
PREFIX = "authentication failed: "


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token's subject. The only source of who did what: payload fields such as
    ``userId`` are never trusted."""

    user_id: str
    company_id: str
    name: str = ""
    role: str = ""
    #: Expiry, seconds since the epoch (the ``exp`` claim).
    exp: float = 0.0

    @property
    def author(self) -> Author:
        return Author(self.user_id, self.name, self.company_id)

    @property
    def display_name(self) -> str:
        """``name`` when the token has one, else the user id (``user:typing``'s userName)."""
        return self.name or self.user_id


@dataclass(frozen=True, slots=True)
class DenyList:
    """Revoked companies and users, as the operator's deny file lists them::

        {"companies": ["acme"], "users": ["u7", {"companyId": "globex", "userId": "u9"}]}

    A user given as a string is revoked in every company; as ``{companyId, userId}`` in that
    company only (user ids are scoped by company, ``collab.rooms.user_room``).
    """

    companies: frozenset[str] = field(default_factory=frozenset)
    users: frozenset[str] = field(default_factory=frozenset)
    company_users: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def denies(self, identity: Identity) -> bool:
        """Whether ``identity`` belongs to a revoked company or is a revoked user."""
        return (
            identity.company_id in self.companies
            or identity.user_id in self.users
            or (identity.company_id, identity.user_id) in self.company_users
        )

    @classmethod
    def parse(cls, raw: object) -> DenyList:
        """A deny list from its JSON value; ``ValueError`` naming what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("the deny file must hold a JSON object {companies: [], users: []}")
        unknown = set(raw) - {"companies", "users"}
        if unknown:
            raise ValueError(f"unknown member(s) {', '.join(sorted(unknown))}")
        companies = raw.get("companies", [])
        users = raw.get("users", [])
        if not isinstance(companies, list) or not all(isinstance(c, str) and c for c in companies):
            raise ValueError("companies must be a list of non-empty company ids")
        if not isinstance(users, list):
            raise ValueError("users must be a list")
        plain: set[str] = set()
        scoped: set[tuple[str, str]] = set()
        for user in users:
            if isinstance(user, str) and user:
                plain.add(user)
            elif (
                isinstance(user, dict)
                and set(user) == {"companyId", "userId"}
                and all(isinstance(v, str) and v for v in user.values())
            ):
                scoped.add((user["companyId"], user["userId"]))
            else:
                raise ValueError(f"users: {user!r} is neither a user id nor {{companyId, userId}}")
        return cls(frozenset(companies), frozenset(plain), frozenset(scoped))

    @classmethod
    def load(cls, path: str) -> DenyList:
        """Read and parse a deny file; ``OSError`` or ``ValueError`` when it cannot be used."""
        with open(path, "rb") as fh:
            text = fh.read()
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        return cls.parse(raw)


class AuthenticationFailed(socketio.exceptions.ConnectionRefusedError):  # type: ignore[misc]
    """A refused token. ``reason`` is the human text, ``slug`` the metrics label."""

    def __init__(self, reason: str, slug: str) -> None:
        super().__init__(PREFIX + reason)
        self.reason = reason
        self.slug = slug

    @property
    def message(self) -> str:
        return PREFIX + self.reason


def _failure(exc: jwt.PyJWTError) -> AuthenticationFailed:
    """The refusal a PyJWT error stands for (most specific classes first)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthenticationFailed("token expired", "token_expired")
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthenticationFailed("bad signature", "bad_signature")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthenticationFailed(f"missing claim {exc.claim}", "missing_claim")
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return AuthenticationFailed("invalid claim sub", "invalid_claim")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AuthenticationFailed("bad issuer", "bad_issuer")
    if isinstance(exc, jwt.InvalidAudienceError):
        return AuthenticationFailed("bad audience", "bad_audience")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return AuthenticationFailed("token not yet valid", "not_yet_valid")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return AuthenticationFailed("algorithm not allowed", "bad_algorithm")
    if isinstance(exc, jwt.DecodeError):
        return AuthenticationFailed("malformed token", "malformed_token")
    return AuthenticationFailed("invalid token", "invalid_token")


#: Tokens a verifier remembers at most (:meth:`TokenVerifier.remember`).
REMEMBERED_TOKENS = 256


class TokenVerifier:
    """Verifies tokens against the configured secret and/or public key.

    The key is chosen by the token header's ``alg`` among the accepted algorithms: HMAC ones
    only ever use the secret, the others only the public key (no algorithm confusion).
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: Any = None,
        algorithms: tuple[str, ...] = (),
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if not secret and public_key is None:
            raise SettingsError("no JWT secret or public key configured")
        derived: list[str] = []
        if secret:
            derived.append("HS256")
        if public_key is not None:
            derived.append(_algorithm_for(public_key))
        self.algorithms = algorithms or tuple(derived)
        self._secret = secret
        self._public_key = public_key
        self.issuer = issuer
        self.audience = audience
        #: Revoked companies and users (replaced as a whole when the deny file changes).
        self.deny = DenyList()
        #: Tokens verified earlier (:meth:`remember`), by their exact text; at most
        #: :data:`REMEMBERED_TOKENS`. Per verifier, so per secret and key.
        self._remembered: dict[str, Identity] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The verifier the settings describe; ``SettingsError`` for an unreadable key."""
        public_key = None
        if settings.jwt_public_key_file:
            try:
                with open(settings.jwt_public_key_file, "rb") as fh:
                    public_key = load_pem_public_key(fh.read())
            except (OSError, ValueError) as exc:
                raise SettingsError(f"cannot load --jwt-public-key-file: {exc}") from None
        return cls(
            secret=settings.jwt_secret,
            public_key=public_key,
            algorithms=settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    def verify(self, token: object) -> Identity:
        """The identity ``token`` proves, or :class:`AuthenticationFailed`."""
        if not isinstance(token, str) or not token:
            raise AuthenticationFailed("missing token", "missing_token")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
            if alg not in self.algorithms:
                raise AuthenticationFailed("algorithm not allowed", "bad_algorithm")
            key = self._secret if str(alg).startswith("HS") else self._public_key
            if not key:
                raise AuthenticationFailed("algorithm not allowed", "bad_algorithm")
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": list(REQUIRED_CLAIMS), "verify_aud": bool(self.audience)},
            )
        except jwt.PyJWTError as exc:
            raise _failure(exc) from None
        identity = _identity(claims)
        if self.deny.denies(identity):
            raise AuthenticationFailed("revoked", "revoked")
        return identity

    def remember(self, token: str, identity: Identity) -> None:
        """Keep ``identity``, which :meth:`verify` gave for ``token``, for
        :meth:`remembered` (all forgotten when full: only a flood of distinct valid tokens
        fills it)."""
        if len(self._remembered) >= REMEMBERED_TOKENS:
            self._remembered.clear()
        self._remembered[token] = identity

    def remembered(self, token: str, now: float) -> Identity | None:
        """The identity :meth:`remember` kept for ``token``, while unexpired at ``now`` (wall
        seconds, as PyJWT checks ``exp``) and not on the deny list (read on every use, so a
        revocation takes effect at once); else None: verify it again."""
        identity = self._remembered.get(token)
        if identity is None or now >= identity.exp or self.deny.denies(identity):
            return None
        return identity


def _identity(claims: Mapping[str, Any]) -> Identity:
    company = claims.get("companyId")
    if not isinstance(company, str) or not company:
        raise AuthenticationFailed("invalid claim companyId", "invalid_claim")
    sub = claims["sub"]
    if not sub:
        raise AuthenticationFailed("invalid claim sub", "invalid_claim")
    name, role = claims.get("name"), claims.get("role")
    for key, value in (("name", name), ("role", role)):
        if value is not None and not isinstance(value, str):
            raise AuthenticationFailed(f"invalid claim {key}", "invalid_claim")
    return Identity(sub, company, name or "", role or "", float(claims["exp"]))


def _algorithm_for(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ES256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise SettingsError("unsupported public key type; use an RSA or EC (P-256) key")


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def handshake_token(auth: object, environ: Mapping[str, Any]) -> str | None:
    """The token of a Socket.IO handshake: ``auth: {token}`` first, else the Bearer header."""
    if isinstance(auth, Mapping):
        token = auth.get("token")
        if isinstance(token, str) and token:
            return bearer(token) if token.lower().startswith("bearer ") else token
    return bearer(environ.get("HTTP_AUTHORIZATION"))


def mint_token(
    key: Any,
    *,
    sub: str,
    company_id: str,
    name: str | None = None,
    role: str | None = None,
    ttl: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A signed token (the CLI's ``token`` subcommand, ``--dev``, tests)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "companyId": company_id,
        "iat": issued,
        "exp": issued + int(ttl),
    }
    for claim, value in (("name", name), ("role", role), ("iss", issuer), ("aud", audience)):
        if value is not None:
            claims[claim] = value
    return jwt.encode(claims, key, algorithm=algorithm)
