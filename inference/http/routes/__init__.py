"""One router per concern; ``inference.http.app.ROUTERS`` lists them."""
