"""The API's routes, one router per resource; :mod:`app.main` builds the application from them."""
