"""The HTTP front door: ``inference.http.app.create_app`` builds the FastAPI app around a
``Service``; one router per concern in ``routes``."""
