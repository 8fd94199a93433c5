"""What an operator reads about a running orchestrator.

- :mod:`.metrics`: Prometheus metrics (``GET /_public/metrics``);
- :mod:`.dashboard`: aggregate statistics (``GET /api/v1/dashboard``).
"""
