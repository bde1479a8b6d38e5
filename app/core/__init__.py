"""The service core: lifecycle, batching engine, compute thread, metrics, domain errors.

No HTTP here: nothing in this package imports FastAPI or Starlette, and no error carries a
status code (the API layer maps them, in app/api/errors.py).
"""
