"""The web console: static files (HTML, CSS, JavaScript modules), served by
the REST transport at ``/`` and ``/console`` (:mod:`avtomatika.rest.console_api`).

No Python runs here and nothing is built: the browser loads these files as
they are, and they talk to the client API (``/api/v1``) with the token the
person typed, sent only in the ``X-Client-Token`` header. ``app.js`` routes
between the views (``jobs.js``, ``job.js``, ``workers.js``,
``blueprints.js``); ``api.js`` is the one place that calls the server;
``dom.js`` builds every element, putting the server's data in as text only.
"""
