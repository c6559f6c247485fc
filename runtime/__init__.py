"""Runtime plumbing shared by the services: local servers, MQTT and database settings,
metrics endpoint. Contracts live in ``schemas``; this package holds no business logic."""
