"""The tokens every test orchestrator accepts (``make_settings`` and
``serve_env`` set them), in a module of their own so that a worker process
can import them without loading the server."""

WORKER_TOKEN = "test-worker-token"
CLIENT_TOKEN = "test-client-token"
