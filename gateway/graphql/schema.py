"""The strawberry schema, with the limits and error handling the gateway promises."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, ParserCache, QueryDepthLimiter, ValidationCache
from strawberry.types import ExecutionContext

from gateway.graphql.arguments import ArgumentChecks
from gateway.graphql.errors import ErrorCodes, log_errors
from gateway.graphql.resolvers import Mutation, Query
from gateway.graphql.types import Listing


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)


def build_schema(
    *, max_listings: int = 200, max_depth: int = 20, max_aliases: int = 200
) -> strawberry.Schema:
    extensions: list[Any] = [
        ErrorCodes,
        ParserCache(maxsize=1024),
        ValidationCache(maxsize=1024),
        QueryDepthLimiter(max_depth=max_depth),
        MaxAliasesLimiter(max_alias_count=max_aliases),
        ArgumentChecks(max_listings=max_listings),
    ]
    return GatewaySchema(query=Query, mutation=Mutation, types=[Listing], extensions=extensions)


def sdl() -> str:
    """The schema's SDL, as checked in at `schema/schema.graphql`."""
    return build_schema().as_str() + "\n"
