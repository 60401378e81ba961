"""The JSON shapes of the API, as ``GET /docs`` shows them: a module per resource, as ``app.routes`` has."""
