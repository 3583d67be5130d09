"""The websocket gateway: reader pages, the websocket endpoint, the REST API and health."""
