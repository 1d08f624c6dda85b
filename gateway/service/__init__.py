"""The service layer the edges call: read planning, its upstream cost, argument checks, per-request batching, histories and `ListingService`."""
