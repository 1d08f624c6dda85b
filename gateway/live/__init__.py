"""Live status: the event bus (in process and over Redis), the V3 webhook subscription, who may see an event, and listing changes of both providers (the change log, the feed, the legacy poller)."""
