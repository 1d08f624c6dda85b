"""Live status: the event bus (in process and over Redis), the V3 webhook subscription and who may see an event."""
