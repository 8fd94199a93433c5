"""Who may do what: client and worker tokens, and checking them.

- :mod:`.clients`: ``clients.toml`` (client tokens, plans, quotas, params);
- :mod:`.worker_tokens`: ``workers.toml`` (per-worker tokens);
- :mod:`.token_files`: what the two files share (reading, token checks);
- :mod:`.authenticator`: the constant-time checks both transports call.
"""
