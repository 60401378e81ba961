"""The FastAPI inspection service: ``uvicorn app.main:app``."""
