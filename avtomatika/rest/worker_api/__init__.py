"""The legacy REST worker API under ``/_worker`` (SDK ``avtomatika-worker``).

- :mod:`.handlers`: the HTTP endpoints (register, heartbeat, long-poll,
  results);
- :mod:`.bodies`: the wire format, read and written;
- :mod:`.websocket`: ``GET /_worker/ws/{worker_id}`` (cancels down,
  progress up);
- :mod:`.sessions`: what this process remembers of each REST worker.
"""
