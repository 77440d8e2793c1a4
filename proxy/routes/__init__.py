"""The proxy's HTTP surface, by concern: each module makes a FastAPI router; :mod:`proxy.web` joins them.

- :mod:`proxy.routes.openai`: the classified endpoints and the ``/v1/*`` pass-through, both into
  :class:`proxy.service.ProxyService`
- :mod:`proxy.routes.models`: ``/v1/models`` from the :class:`~proxy.catalog.ModelCatalog`
- :mod:`proxy.routes.ops`: health, readiness, metrics, canary state
- :mod:`proxy.routes.admin`: quarantine on and off, behind the admin key

Every ``/v1`` route depends on :class:`proxy.auth.ClientAuth` (the client's key), the admin routes on
the same check against the admin key.
"""
