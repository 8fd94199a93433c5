"""The engine: jobs, their steps and results, task dispatch, and the registry
of connected workers. No transport, no Redis: it talks to a
:class:`~avtomatika.storage.base.Storage`.

- :mod:`.core`: :class:`~avtomatika.engine.core.Engine`, the one object the
  transports and features call;
- :mod:`.executor`: runs one step (a handler) and commits what it decided;
- :mod:`.results`: what a task's end does to its job (pure decisions);
- :mod:`.tasks`: task records, first attempts and retries;
- :mod:`.events`, :mod:`.signals`, :mod:`.followers`: what happened, for
  whoever listens (history, webhooks, metrics, followers of a job);
- :mod:`.registry`: the workers connected to this process, whatever their
  transport; :mod:`.roster`: what each did recently, for dispatch.

The package imports nothing on its own: ``import avtomatika.engine.events``
must not load the whole engine.
"""
