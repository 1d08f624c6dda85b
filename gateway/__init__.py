"""Listing Status Gateway: one GraphQL and gRPC view of listing status across two upstream APIs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("listing-status-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
