"""gateway: the Socket.IO and HTTP front of the collab engine.

Speaks the wire contract (``/work/shared/CONTRACT.md``, mirrored in ``docs/``): authenticates
connections, keeps rooms and presence, turns client events into engine calls and engine
outcomes into the seed guide's events. Knows sockets and HTTP; every document decision is the
engine's (``collab``).

``gateway.app.create_app(settings)`` builds the aiohttp application; ``collab-gateway``
(``gateway.cli``) serves it.
"""
