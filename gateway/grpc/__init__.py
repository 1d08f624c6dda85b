"""The gRPC edge: `listing.v1.ListingStatusService` over `grpc.aio`, beside the HTTP app.

`servicer.py` translates protobuf messages to service calls and back, `errors.py` maps
the `GatewayError` tree to status codes, `server.py` runs the server with health checking
and reflection. `generated/` holds the stubs `gateway proto` builds from
`schema/listing_status.proto`; nothing here is written by hand there.
"""
