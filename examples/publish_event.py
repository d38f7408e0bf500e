"""Publish an ERP event to the users allowed to see it (a toast on the /demo page).

With the Python publisher, through Redis, to every gateway started with ``--redis``::

    collab-gateway --dev --redis redis://localhost:6379/0
    python examples/publish_event.py invoice:paid acme --redis redis://localhost:6379/0

To a gateway without Redis, over HTTP (``POST /api/events`` with a service token)::

    TOKEN=$(collab-gateway token --sub erp --company acme --role service --jwt-secret "$SECRET")
    python examples/publish_event.py invoice:paid acme --url http://localhost:3001 --token $TOKEN

The payload is ``--data '{...}'``, or a sample for the event. ``notification:new`` and
``task:assigned`` go to one user (``--user``, or the payload's ``userId`` / ``assignedTo``);
the others to the whole company. Payloads are checked against the integration guide's types
either way (an error lists every bad field).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp

from collab.errors import CollabError
from gateway.publisher import RedisPublisher


def samples(company: str, user: str) -> dict[str, dict[str, Any]]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "invoice:paid": {
            "id": "inv-1042",
            "invoiceNumber": "INV-2024-1042",
            "amount": 18250.0,
            "paidAt": now,
            "paidBy": "Northwind Developments",
        },
        "notification:new": {
            "id": "n-77",
            "title": "Inspection booked",
            "message": "Level 3 rebar inspection, Tuesday 8:00",
            "type": "info",
            "userId": user,
            "createdAt": now,
        },
        "project:created": {
            "id": "p-9",
            "name": "Riverside Tower",
            "companyId": company,
            "status": "planning",
            "createdAt": now,
        },
        "stock:updated": {
            "id": "item-rebar-12",
            "itemName": "Rebar 12 mm",
            "quantity": 340,
            "location": "Yard B",
            "updatedAt": now,
        },
        "task:assigned": {
            "taskId": "t-5",
            "taskName": "Check formwork, level 3",
            "assignedTo": user,
            "assignedBy": "site-manager",
            "projectId": "p-9",
        },
    }


async def main(args: argparse.Namespace) -> None:
    user = args.user or "ann"
    if args.data:
        data = json.loads(args.data)
    else:
        table = samples(args.company, user)
        if args.event not in table:
            raise SystemExit(
                f"no sample for {args.event}: pass --data (samples: {', '.join(table)})"
            )
        data = table[args.event]
    if args.redis:
        async with RedisPublisher(args.redis) as publisher:
            try:
                route = await publisher.publish(args.event, args.company, data, args.user)
            except CollabError as exc:
                raise SystemExit(f"refused: {exc.message}") from None
        target = f"user {route.user_id}" if route.user_id else f"company {args.company}"
        print(f"published {args.event} to {target} through {args.redis}")
        return
    body = {"event": args.event, "companyId": args.company, "userId": args.user, "data": data}
    headers = {"Authorization": f"Bearer {args.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{args.url}/api/events", json=body, headers=headers) as r,
    ):
        print(r.status, json.dumps(await r.json()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("event", help="e.g. invoice:paid, notification:new, stock:updated")
    parser.add_argument("company", help="the company whose users may see it")
    parser.add_argument("--user", help="target user (user-scoped events; default ann)")
    parser.add_argument("--data", help="the payload as JSON (default: a sample)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--redis", help="Redis URL the gateways were started with (--redis)")
    how.add_argument("--url", help="a gateway's URL, to POST /api/events (needs --token)")
    parser.add_argument("--token", help="with --url: a token with role service")
    ns = parser.parse_args()
    if ns.url and not ns.token:
        parser.error("--url needs --token (collab-gateway token ... --role service)")
    asyncio.run(main(ns))
