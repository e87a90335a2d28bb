"""The aelab service: REST API, persistence, dispatcher. Never imports torch."""
