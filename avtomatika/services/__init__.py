"""Application services: each use case once, called by both transports.

- :mod:`.client_api`: what an API client does (create, get, follow, cancel
  jobs; history, graphs, workers, the dashboard), with authentication, rate
  limits, quotas, ownership and validation;
- :mod:`.public_api`: what needs no token (status, metrics, human
  decisions, the development flush, the API's documents);
- :mod:`.requests`: the validation of what a client sends.

The transports (``rest/``, ``grpc/``) translate to and from these; the
services call the engine and the features, never a transport.
"""
