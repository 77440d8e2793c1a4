"""The proxy's HTTP surface, by concern; :mod:`proxy.routes.table` dispatches them all.

- :mod:`proxy.routes.openai`: the classified endpoints and the ``/v1/*`` pass-through, both into
  :class:`proxy.service.ProxyService`
- :mod:`proxy.routes.models`: ``/v1/models`` from the :class:`~proxy.catalog.ModelCatalog`
- :mod:`proxy.routes.ops`: health, readiness, metrics, the OpenAPI document, canary state
- :mod:`proxy.routes.admin`: quarantine on and off, behind the admin key
"""
