"""Socket.IO room names: the one place that spells them.

Every connection joins its company room and its own user room; document and resource members
join the room of what they opened (CONTRACT.md, "Rooms and authorization"). Building the names
here, and nowhere else, keeps two rules in one place:

- a user room is scoped by company, so a user id shared by two tenants never crosses;
- no two different (company, user) pairs share a room name, even when ids contain ``:``.
  The company id is the only component followed by another one, so it alone is escaped
  (``%`` → ``%25``, ``:`` → ``%3A``); ids without those characters are used as they are.
"""

from __future__ import annotations

from collab.errors import invalid
from collab.model import KINDS, Kind


def _require_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"{what} must be a non-empty string")
    return value


def _escape(component: str) -> str:
    """Make ``component`` free of ``:`` so that the next separator is unambiguous."""
    return component.replace("%", "%25").replace(":", "%3A")


def company_room(company_id: str) -> str:
    """The room every connection of ``company_id`` joins: ``company:<company_id>``."""
    return f"company:{_require_id('company id', company_id)}"


def user_room(company_id: str, user_id: str) -> str:
    """The room of one user within one company: ``user:<company_id>:<user_id>``."""
    company = _escape(_require_id("company id", company_id))
    return f"user:{company}:{_require_id('user id', user_id)}"


def document_room(kind: Kind, doc_id: str) -> str:
    """The room of a joined document or resource: ``document:<id>`` or ``resource:<id>``.

    Not scoped by company: an id names one document, owned by the company that created it,
    and the gateway refuses other companies' users before they can join.
    """
    if kind not in KINDS:
        raise invalid(f"room kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return f"{kind}:{_require_id(f'{kind} id', doc_id)}"
