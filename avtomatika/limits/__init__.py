"""Per-client request rate limits and monthly job quotas.

- :mod:`.client_limits`: :class:`ClientLimits`, and the in-process
  variant (one orchestrator);
- :mod:`.redis`: the same counters in Redis, shared by every instance.
"""
