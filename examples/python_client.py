"""Join a document, make an edit, and print everything that happens in it.

Against a dev gateway (it mints the token for you)::

    collab-gateway --dev --store memory://
    python examples/python_client.py rfi-42 --user ann --company acme --edit "Pump at 7:00"

Against any gateway, with a token (``collab-gateway token --sub ann --company acme``)::

    COLLAB_TOKEN=eyJ... python examples/python_client.py rfi-42 --url http://host:3001

Open http://localhost:3001/demo as another user of the same company to watch it live.
Stops on Ctrl-C, or after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os

import aiohttp

from gateway.client import CollabClient, RequestError


async def dev_token(url: str, user: str, company: str, name: str) -> str:
    """A token from a --dev gateway's demo endpoint (absent on any other gateway)."""
    body = {"user": user, "company": company, "name": name}
    async with aiohttp.ClientSession() as http, http.post(f"{url}/demo/token", json=body) as r:
        if r.status != 200:
            raise SystemExit(
                f"{url} mints no tokens (not --dev?): pass --token or set COLLAB_TOKEN"
            )
        token: str = (await r.json())["token"]
        return token


async def main(args: argparse.Namespace) -> None:
    token = args.token or os.environ.get("COLLAB_TOKEN")
    if not token:
        token = await dev_token(args.url, args.user, args.company, args.name or args.user)
    async with CollabClient(args.url, token) as client:
        events = client.events()  # subscribe first: nothing is missed after the join
        doc = await client.join(args.document, strategy=args.strategy, text_fields=["notes"])
        print(f"joined {doc.document_id!r} at v{doc.version} ({doc.strategy}): {doc.data}")
        for conflict in doc.conflicts:
            print(f"  pending conflict {conflict['conflictId']}: {conflict['conflictedFields']}")

        if args.edit:
            await client.typing(args.document)
            state = client.document(args.document)
            assert state is not None
            notes = str(state.data.get("notes") or "")
            data = {**state.data, "notes": f"{notes}\n{args.edit}" if notes else args.edit}
            try:
                result = await client.update(args.document, state.version, data)
                print(f"edit {result.status} -> v{result.version} (opId {result.op_id})")
            except RequestError as exc:
                print(f"edit refused: {exc.code}: {exc.message}")

        print("watching (Ctrl-C to stop)...")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.seconds):
                async for name, payload in events:
                    text = json.dumps(payload, ensure_ascii=False)
                    print(f"{name}: {text[:300]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("document", help="document id (created if it does not exist)")
    parser.add_argument("--url", default="http://localhost:3001", help="the gateway")
    parser.add_argument("--token", help="a JWT (default: $COLLAB_TOKEN, else a dev token)")
    parser.add_argument("--user", default="py-bot", help="dev token: user id")
    parser.add_argument("--name", help="dev token: display name")
    parser.add_argument("--company", default="acme", help="dev token: company id")
    parser.add_argument("--strategy", choices=("merge", "manual", "last-write-wins"))
    parser.add_argument("--edit", help="append this line to the notes")
    parser.add_argument("--seconds", type=float, help="stop watching after this long")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
