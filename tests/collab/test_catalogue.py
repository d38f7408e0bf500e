"""The event catalogue: payload validation, publishability and routing of server events."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.catalogue import (
    EVENTS,
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    EventSpec,
    FieldSpec,
    Route,
    check_publishable,
    payload_schema_markdown,
    prepare_publish,
    route_event,
    validate_event,
)
from collab.errors import CollabError, ErrorCode
from collab.rooms import company_room, document_room, user_room

TS = "2024-01-15T10:30:00.000Z"  # what JS toISOString() writes

#: One payload per server event of the seed guide, in the guide's own shape.
GUIDE_EXAMPLES: dict[str, dict[str, Any]] = {
    "project:created": {
        "id": "p-1",
        "name": "Riverside Tower",
        "companyId": "c-1",
        "status": "planning",
        "createdAt": TS,
    },
    "project:updated": {
        "id": "p-1",
        "name": "Riverside Tower",
        "companyId": "c-1",
        "status": "in_progress",
        "updatedAt": TS,
    },
    "project:deleted": {"id": "p-1", "companyId": "c-1"},
    "task:assigned": {
        "taskId": "t-1",
        "taskName": "Pour foundation",
        "assignedTo": "u-2",
        "assignedBy": "u-1",
        "projectId": "p-1",
        "dueDate": "2024-02-01",
    },
    "invoice:paid": {
        "id": "i-1",
        "invoiceNumber": "INV-2024-001",
        "amount": 12500.5,
        "paidAt": TS,
        "paidBy": "u-1",
    },
    "expense:approved": {"id": "e-1", "amount": 320, "status": "approved", "approvedAt": TS},
    "expense:rejected": {
        "id": "e-2",
        "amount": 99.99,
        "status": "rejected",
        "rejectedAt": TS,
        "reason": "No receipt",
    },
    "payment:processed": {
        "id": "pay-1",
        "amount": 5000,
        "method": "bank_transfer",
        "status": "completed",
        "processedAt": TS,
    },
    "stock:updated": {
        "id": "s-1",
        "itemName": "Cement (50kg)",
        "quantity": 120,
        "location": "Yard A",
        "updatedAt": TS,
    },
    "item:added": {"id": "s-2", "itemName": "Rebar 12mm", "quantity": 0, "addedAt": TS},
    "reorder:triggered": {
        "itemId": "s-1",
        "itemName": "Cement (50kg)",
        "currentStock": 8,
        "reorderLevel": 10,
        "suggestedQuantity": 100,
    },
    "user:online": {"userId": "u-1", "status": "online", "timestamp": TS},
    "user:offline": {"userId": "u-1", "status": "offline", "timestamp": TS},
    "user:typing": {
        "userId": "u-1",
        "userName": "Ada",
        "resourceId": "doc-123",
        "resourceType": "document",
    },
    "document:updated": {
        "documentId": "doc-123",
        "version": 4,
        "data": {"title": "Site plan", "items": [1, "two", None, {"x": 1.5}]},
        "updatedBy": "u-1",
        "updatedAt": TS,
    },
    "document:conflict": {
        "documentId": "doc-123",
        "strategy": "manual",
        "conflictedFields": ["notes", "site.address", "items.2"],
        "originalValue": {"notes": "a"},
        "incomingValue": {"notes": "b"},
        "timestamp": TS,
    },
    "conflict:resolved": {
        "resourceId": "res-456",
        "strategy": "last-write-wins",
        "conflictedFields": ["notes"],
        "originalValue": {"notes": "a"},
        "incomingValue": {"notes": "b"},
        "resolvedValue": {"notes": "b"},
        "timestamp": TS,
    },
    "notification:new": {
        "id": "n-1",
        "title": "Invoice paid",
        "message": "INV-2024-001 was paid",
        "type": "success",
        "userId": "u-2",
        "createdAt": TS,
        "actionUrl": "/invoices/i-1",
    },
}

#: The catalogue's one addition to the guide: CONTRACT.md's resource twin of document:updated.
ALL_EXAMPLES: dict[str, dict[str, Any]] = {
    **GUIDE_EXAMPLES,
    "resource:updated": {
        "resourceId": "res-456",
        "version": 2,
        "data": {"a": 1},
        "updatedBy": "u-1",
        "updatedAt": TS,
    },
}

ENGINE_ONLY = {
    "user:online",
    "user:offline",
    "user:typing",
    "document:updated",
    "document:conflict",
    "conflict:resolved",
}
COMPANY_EVENTS = [
    "project:created",
    "project:updated",
    "project:deleted",
    "invoice:paid",
    "expense:approved",
    "expense:rejected",
    "payment:processed",
    "stock:updated",
    "item:added",
    "reorder:triggered",
]


def example(event: str, /, **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(ALL_EXAMPLES[event])
    payload.update(changes)
    return payload


def field_errors(name: str, payload: object) -> dict[str, str]:
    with pytest.raises(CollabError) as caught:
        validate_event(name, payload)
    assert caught.value.code is ErrorCode.INVALID_PAYLOAD
    fields = caught.value.details["fields"]
    assert isinstance(fields, dict)
    return fields


# --------------------------------------------------------------------------------------------
# The catalogue covers the guide


def test_every_guide_event_is_catalogued() -> None:
    assert set(GUIDE_EXAMPLES) <= set(EVENTS)
    assert set(EVENTS) == set(ALL_EXAMPLES)
    for name, spec in EVENTS.items():
        assert isinstance(spec, EventSpec)
        assert spec.name == name
        assert spec.description


@pytest.mark.parametrize("name", sorted(ALL_EXAMPLES))
def test_guide_example_validates_to_an_equal_copy(name: str) -> None:
    payload = example(name)
    result = validate_event(name, payload)
    assert result == payload
    assert result is not payload
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("name", sorted(GUIDE_EXAMPLES))
def test_guide_fields_are_exactly_the_catalogued_ones(name: str) -> None:
    spec = EVENTS[name]
    required = {key for key, field in spec.fields.items() if field.required}
    assert required <= set(GUIDE_EXAMPLES[name])


def test_literal_unions_are_enums() -> None:
    assert EVENTS["project:created"].fields["status"].enum == (
        "planning",
        "in_progress",
        "on_hold",
        "completed",
        "cancelled",
    )
    assert EVENTS["payment:processed"].fields["status"].enum == ("pending", "completed", "failed")
    assert EVENTS["notification:new"].fields["type"].enum == (
        "info",
        "warning",
        "error",
        "success",
    )
    assert EVENTS["expense:approved"].fields["status"].enum == ("approved",)
    assert EVENTS["expense:rejected"].fields["status"].enum == ("rejected",)
    assert EVENTS["user:online"].fields["status"].enum == ("online",)
    assert EVENTS["user:offline"].fields["status"].enum == ("offline",)


def test_specs_are_immutable() -> None:
    spec = EVENTS["invoice:paid"]
    with pytest.raises(AttributeError):
        spec.publishable = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.fields["amount"] = FieldSpec("string")  # type: ignore[index]
    with pytest.raises(TypeError):
        EVENTS["x"] = spec  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# Accepted shapes


def test_extra_fields_are_kept_and_copied() -> None:
    nested = {"tags": ("a", "b"), "meta": {"source": "erp"}}
    result = validate_event("invoice:paid", example("invoice:paid", extra=nested))
    assert result["extra"] == {"tags": ["a", "b"], "meta": {"source": "erp"}}
    result["extra"]["meta"]["source"] = "changed"
    assert nested["meta"] == {"source": "erp"}


def test_optional_fields_may_be_absent_or_null() -> None:
    absent = example("task:assigned")
    del absent["dueDate"]
    assert validate_event("task:assigned", absent) == absent
    assert "dueDate" not in validate_event("task:assigned", example("task:assigned", dueDate=None))


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-15T10:30:00.000Z",
        "2024-01-15T10:30:00Z",
        "2024-01-15T10:30Z",
        "2024-01-15T10:30:00.123456+05:30",
        "2024-01-15T10:30:00-08:00",
        "2024-02-29T23:59:59.999Z",
    ],
)
def test_timestamps_accept_iso_8601_with_offset(value: str) -> None:
    validate_event("invoice:paid", example("invoice:paid", paidAt=value))


@pytest.mark.parametrize("value", ["2024-02-01", "2024-02-01T09:00:00.000Z"])
def test_due_date_accepts_a_date_or_a_timestamp(value: str) -> None:
    validate_event("task:assigned", example("task:assigned", dueDate=value))


@pytest.mark.parametrize("value", [0, -3, 1.5, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 1e300])
def test_numbers_accept_ints_and_finite_floats(value: float) -> None:
    validate_event("stock:updated", example("stock:updated", quantity=value))


def test_conflict_events_accept_a_resource_id_in_place_of_a_document_id() -> None:
    payload = example("document:conflict", resourceId="res-1")
    del payload["documentId"]
    validate_event("document:conflict", payload)


# --------------------------------------------------------------------------------------------
# Refused shapes


def test_missing_required_field() -> None:
    payload = example("invoice:paid")
    del payload["amount"]
    assert field_errors("invoice:paid", payload) == {"amount": "is required"}


def test_null_required_field_is_a_wrong_type() -> None:
    assert field_errors("invoice:paid", example("invoice:paid", amount=None)) == {
        "amount": "must be a number, got null"
    }


@pytest.mark.parametrize(
    ("name", "key", "value", "reason"),
    [
        ("project:created", "name", 42, "must be a string, got number"),
        ("project:created", "id", "", "must be a non-empty string"),
        ("project:created", "id", ["p-1"], "must be a string, got array"),
        ("invoice:paid", "amount", "12500.50", "must be a number, got string"),
        ("invoice:paid", "amount", True, "must be a number, got boolean"),
        ("expense:approved", "amount", False, "must be a number, got boolean"),
        ("invoice:paid", "amount", {"value": 1}, "must be a number, got object"),
        (
            "document:conflict",
            "conflictedFields",
            "notes",
            "must be an array of strings, got string",
        ),
    ],
)
def test_wrong_type(name: str, key: str, value: object, reason: str) -> None:
    assert field_errors(name, example(name, **{key: value})) == {key: reason}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    assert field_errors("stock:updated", example("stock:updated", quantity=value)) == {
        "quantity": "must be a finite number"
    }


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER + 1, -(2**64)])
def test_integers_beyond_javascript_safe_range_are_refused(value: int) -> None:
    assert "quantity" in field_errors("stock:updated", example("stock:updated", quantity=value))


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("project:created", "status", "archived"),
        ("project:updated", "status", "IN_PROGRESS"),
        ("payment:processed", "status", "refunded"),
        ("notification:new", "type", "debug"),
        ("expense:approved", "status", "rejected"),
        ("expense:rejected", "status", "approved"),
        ("user:online", "status", "offline"),
        ("user:offline", "status", "away"),
        ("document:conflict", "strategy", "first-write-wins"),
    ],
)
def test_bad_enum_value(name: str, key: str, value: str) -> None:
    errors = field_errors(name, example(name, **{key: value}))
    assert list(errors) == [key]
    assert errors[key].startswith("must be one of ")
    for allowed in EVENTS[name].fields[key].enum:
        assert repr(allowed) in errors[key]


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "",
        "2024-01-15",  # date only: not for a timestamp
        "2024-01-15T10:30:00",  # naive: each client would read it in its own zone
        "2024-01-15 10:30:00Z",  # space separator: not the JS date-time format
        "20240115T103000Z",  # basic format: JS Date cannot parse it
        "2024-W03-1T10:30:00Z",  # week date
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-15T24:00:00Z",
        "2024-01-15T10:30:00.000z",
        "2024-01-15T10:30:00.000Z ",
        "\uff12\uff10\uff12\uff14-01-15T10:30:00Z",  # fullwidth digits
    ],
)
def test_bad_timestamps_are_refused(value: str) -> None:
    errors = field_errors("notification:new", example("notification:new", createdAt=value))
    assert list(errors) == ["createdAt"]
    assert "ISO-8601" in errors["createdAt"]


def test_timestamp_must_be_a_string() -> None:
    when = datetime(2024, 1, 15, tzinfo=UTC)
    assert field_errors("invoice:paid", example("invoice:paid", paidAt=when)) == {
        "paidAt": "must be an ISO-8601 string, got datetime"
    }


@pytest.mark.parametrize("value", ["2024-02-30", "01/02/2024", "2024-02-01T09:00:00"])
def test_bad_due_dates_are_refused(value: str) -> None:
    assert list(field_errors("task:assigned", example("task:assigned", dueDate=value))) == [
        "dueDate"
    ]


def test_string_list_items_are_checked_one_by_one() -> None:
    payload = example("document:conflict", conflictedFields=["notes", 3, None])
    assert field_errors("document:conflict", payload) == {
        "conflictedFields.1": "must be a string, got number",
        "conflictedFields.2": "must be a string, got null",
    }


def test_conflict_events_need_a_document_or_resource_id() -> None:
    payload = example("conflict:resolved")
    del payload["resourceId"]
    errors = field_errors("conflict:resolved", payload)
    assert set(errors) == {"documentId", "resourceId"}


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"at": datetime(2024, 1, 1)}, "extra.at"),
        ({"tags": {"a", "b"}}, "extra.tags"),
        ({"n": [1, math.nan]}, "extra.n.1"),
        ({1: "one"}, "extra.1"),
        ({"blob": b"\x00"}, "extra.blob"),
        ({"big": 2**70}, "extra.big"),
        ({"bad": "\ud800"}, "extra.bad"),
    ],
)
def test_extra_fields_must_be_json(extra: dict[Any, Any], path: str) -> None:
    assert list(field_errors("invoice:paid", example("invoice:paid", extra=extra))) == [path]


def test_any_fields_must_be_json_too() -> None:
    payload = example("document:updated", data={"when": datetime(2024, 1, 1)})
    assert list(field_errors("document:updated", payload)) == ["data.when"]


def test_lone_surrogates_are_refused() -> None:
    assert list(field_errors("invoice:paid", example("invoice:paid", paidBy="\udc00"))) == [
        "paidBy"
    ]


def test_too_deep_nesting_is_refused_not_crashing() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    errors = field_errors("invoice:paid", example("invoice:paid", extra=deep))
    assert len(errors) == 1
    assert next(iter(errors.values())).startswith("is nested deeper than")


def test_cyclic_values_are_refused_not_crashing() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert len(field_errors("invoice:paid", example("invoice:paid", extra=cyclic))) == 1


@pytest.mark.parametrize("payload", [None, [], "x", 3])
def test_payload_must_be_an_object(payload: object) -> None:
    errors = field_errors("invoice:paid", payload)
    assert list(errors) == [""]
    assert errors[""].startswith("must be a JSON object")


def test_every_error_is_reported_at_once() -> None:
    payload = {
        "id": "",
        "amount": math.nan,
        "paidAt": "2024-01-15",
        "paidBy": 7,
        "extra": {"x": math.inf},
    }
    with pytest.raises(CollabError) as caught:
        validate_event("invoice:paid", payload)
    error = caught.value
    assert error.details["fields"] == {
        "id": "must be a non-empty string",
        "invoiceNumber": "is required",
        "amount": "must be a finite number",
        "paidAt": error.details["fields"]["paidAt"],
        "paidBy": "must be a string, got number",
        "extra.x": "must be a finite number",
    }
    assert "ISO-8601" in error.details["fields"]["paidAt"]
    assert error.message.startswith("invalid invoice:paid payload: id must be a non-empty")
    assert error.message.endswith("; and 1 more")
    wire = error.to_wire()
    assert wire["code"] == "invalid_payload"
    assert wire["fields"] == error.details["fields"]


def test_unknown_event_lists_nothing_else() -> None:
    with pytest.raises(CollabError) as caught:
        validate_event("project:create", {"garbage": math.nan})
    assert caught.value.code is ErrorCode.INVALID_PAYLOAD
    assert caught.value.details == {}
    assert (
        caught.value.message == "unknown event 'project:create' (did you mean 'project:created'?)"
    )


@pytest.mark.parametrize("name", ["", "PROJECT:CREATED", "connect", "document:update"])
def test_unknown_event_names(name: str) -> None:
    with pytest.raises(CollabError, match="unknown event"):
        validate_event(name, {})


def test_non_string_event_name_is_unknown() -> None:
    with pytest.raises(CollabError, match="unknown event 3"):
        validate_event(3, {})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Publishability


@pytest.mark.parametrize("name", sorted(set(GUIDE_EXAMPLES) - ENGINE_ONLY))
def test_erp_events_are_publishable(name: str) -> None:
    assert check_publishable(name) is EVENTS[name]


@pytest.mark.parametrize("name", sorted(ENGINE_ONLY | {"resource:updated"}))
def test_engine_only_events_are_not_publishable(name: str) -> None:
    assert EVENTS[name].publishable is False
    validate_event(name, example(name))
    with pytest.raises(CollabError) as caught:
        check_publishable(name)
    assert caught.value.code is ErrorCode.INVALID_PAYLOAD
    assert "emitted by the gateway itself" in caught.value.message


def test_unknown_events_are_not_publishable() -> None:
    with pytest.raises(CollabError, match="unknown event 'order:placed'"):
        check_publishable("order:placed")


def test_prepare_publish_checks_validates_and_routes() -> None:
    payload, route = prepare_publish("task:assigned", "c-1", example("task:assigned"))
    assert payload == example("task:assigned")
    assert route == Route("user", "c-1", "u-2")
    with pytest.raises(CollabError, match="emitted by the gateway itself"):
        prepare_publish("user:online", "c-1", example("user:online"))
    with pytest.raises(CollabError) as caught:
        prepare_publish("invoice:paid", "c-1", {"id": "i-1"})
    assert "amount" in caught.value.details["fields"]


# --------------------------------------------------------------------------------------------
# Routing


@pytest.mark.parametrize("name", [*COMPANY_EVENTS, "user:online", "user:offline"])
def test_company_events_go_to_the_company_room(name: str) -> None:
    route = route_event(name, "c-1", example(name))
    assert route == Route("company", "c-1", None)
    assert route.room == "company:c-1"


def test_task_assigned_goes_to_the_assignee() -> None:
    route = route_event("task:assigned", "c-1", example("task:assigned", assignedTo="u-9"))
    assert route == Route("user", "c-1", "u-9")
    assert route.room == "user:c-1:u-9"


def test_notification_goes_to_its_user() -> None:
    route = route_event("notification:new", "c-1", example("notification:new", userId="u-7"))
    assert route == Route("user", "c-1", "u-7")


@pytest.mark.parametrize("name", [*COMPANY_EVENTS, "task:assigned", "notification:new"])
def test_an_explicit_target_user_gets_it_alone(name: str) -> None:
    route = route_event(name, "c-1", example(name), user_id="u-42")
    assert route == Route("user", "c-1", "u-42")
    assert route.room == "user:c-1:u-42"


def test_user_rooms_are_scoped_by_company() -> None:
    a = route_event("notification:new", "c-a", example("notification:new", userId="u-1"))
    b = route_event("notification:new", "c-b", example("notification:new", userId="u-1"))
    assert a.room != b.room
    assert user_room("c-a", "u-1") != user_room("c-b", "u-1")


@pytest.mark.parametrize("name", sorted(n for n, s in EVENTS.items() if s.route == "document"))
def test_document_room_events_cannot_be_routed_by_company_or_user(name: str) -> None:
    with pytest.raises(CollabError, match="document's room"):
        route_event(name, "c-1", {}, user_id="u-1")


@pytest.mark.parametrize("target", [None, "", 3])
def test_user_event_without_a_usable_target_is_refused(target: object) -> None:
    payload = example("task:assigned", assignedTo=target)
    with pytest.raises(CollabError) as caught:
        route_event("task:assigned", "c-1", payload)
    assert list(caught.value.details["fields"]) == ["assignedTo"]


def test_payload_company_must_match_the_published_company() -> None:
    with pytest.raises(CollabError) as caught:
        route_event("project:created", "c-1", example("project:created", companyId="c-2"))
    assert list(caught.value.details["fields"]) == ["companyId"]


@pytest.mark.parametrize(("company_id", "user_id"), [("", None), ("c-1", ""), (None, None)])
def test_routing_needs_real_ids(company_id: Any, user_id: Any) -> None:
    with pytest.raises(CollabError, match="must be a non-empty string"):
        route_event("invoice:paid", company_id, example("invoice:paid"), user_id=user_id)


def test_unknown_event_cannot_be_routed() -> None:
    with pytest.raises(CollabError, match="unknown event"):
        route_event("nope", "c-1", {})


def test_route_is_consistent() -> None:
    with pytest.raises(ValueError):
        Route("user", "c-1", None)
    with pytest.raises(ValueError):
        Route("company", "c-1", "u-1")


# --------------------------------------------------------------------------------------------
# Room names


def test_room_names() -> None:
    assert company_room("c-1") == "company:c-1"
    assert user_room("c-1", "u-1") == "user:c-1:u-1"
    assert document_room("document", "doc-123") == "document:doc-123"
    assert document_room("resource", "res-456") == "resource:res-456"


def test_user_rooms_never_collide_across_companies_even_with_colons() -> None:
    assert user_room("a:b", "c") != user_room("a", "b:c")
    assert user_room("a%3Ab", "c") != user_room("a:b", "c")


@pytest.mark.parametrize(
    "call",
    [
        lambda: company_room(""),
        lambda: user_room("", "u"),
        lambda: user_room("c", ""),
        lambda: document_room("document", ""),
        lambda: document_room("folder", "x"),  # type: ignore[arg-type]
    ],
)
def test_room_names_refuse_empty_ids_and_unknown_kinds(call: Any) -> None:
    with pytest.raises(CollabError) as caught:
        call()
    assert caught.value.code is ErrorCode.INVALID_PAYLOAD


# --------------------------------------------------------------------------------------------
# Documentation


def test_schema_markdown_lists_every_event() -> None:
    text = payload_schema_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(EVENTS)
    assert "| `task:assigned` | user (`assignedTo`) | yes |" in text
    assert "| `document:updated` | document | no (gateway only) |" in text
    assert "`dueDate?`: date" in text


# --------------------------------------------------------------------------------------------
# Property: payloads built from the spec validate; one broken required field is named


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    when = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    offset = draw(st.sampled_from(["Z", "+00:00", "+05:30", "-08:00"]))
    base = (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
        f"T{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    )
    fraction = draw(st.sampled_from(["", f".{when.microsecond // 1000:03d}"]))
    return base + fraction + offset


_DATES = st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}")


def _values(field: FieldSpec) -> st.SearchStrategy[Any]:
    if field.enum:
        return st.sampled_from(field.enum)
    return {
        "id": st.text(min_size=1, max_size=12),
        "string": st.text(max_size=12),
        "number": st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
        | st.floats(allow_nan=False, allow_infinity=False),
        "boolean": st.booleans(),
        "any": _JSON,
        "timestamp": _timestamps(),
        "date": _DATES | _timestamps(),
        "string[]": st.lists(st.text(max_size=8), max_size=4),
    }[field.type]


_NOT_A_STRING: list[Any] = [None, True, 0, 1.5, [], {}]
_WRONG: dict[str, list[Any]] = {
    "id": ["", *_NOT_A_STRING],
    "string": ["\ud800", *_NOT_A_STRING],
    "number": [None, True, False, "1", [], {}, math.nan, math.inf, MAX_SAFE_INTEGER + 1],
    "boolean": [None, 0, 1, "true", [], {}],
    "any": [math.nan, object(), {1, 2}, b"bytes", {"k": math.inf}],
    "timestamp": ["yesterday", "2024-01-15", "2024-01-15T10:30:00", 1705314600000, None],
    "date": ["2024-02-30", "15/01/2024", "2024-01-15T10:30:00", None, 20240115],
    "string[]": [None, "notes", {}, [1], ["ok", None]],
}


def _wrong_values(field: FieldSpec) -> st.SearchStrategy[Any]:
    wrong = list(_WRONG[field.type])
    if field.enum:
        wrong.append("not-" + field.enum[0])
    return st.sampled_from(wrong)


@st.composite
def _events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(EVENTS)))
    spec = EVENTS[name]
    must = draw(st.sampled_from(spec.one_of)) if spec.one_of else None
    payload: dict[str, Any] = {}
    for key, field in spec.fields.items():
        if field.required or key == must or draw(st.booleans()):
            payload[key] = draw(_values(field))
    return name, payload


_MISSING = object()


@settings(max_examples=300, deadline=None)
@given(event=_events(), data=st.data())
def test_generated_payloads_validate_and_one_broken_field_is_named(
    event: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    name, payload = event
    result = validate_event(name, payload)
    assert result == payload
    json.dumps(result, allow_nan=False)

    spec = EVENTS[name]
    key = data.draw(st.sampled_from([k for k, f in spec.fields.items() if f.required]))
    bad = data.draw(st.just(_MISSING) | _wrong_values(spec.fields[key]))
    broken = dict(payload)
    if bad is _MISSING:
        del broken[key]
    else:
        broken[key] = bad
    errors = field_errors(name, broken)
    assert errors
    assert all(path == key or path.startswith(key + ".") for path in errors), errors
