"""Stubs generated from `schema/listing_status.proto` by `gateway proto`; do not edit."""
