"""The strawberry schema, with the limits and error handling the gateway promises."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from inspect import isawaitable
from typing import Any

import strawberry
from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    NoSchemaIntrospectionCustomRule,
    specified_rules,
)
from graphql import OperationType as CoreOperationType
from graphql import execute as graphql_execute
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from gateway.graphql.arguments import ArgumentChecks
from gateway.graphql.cost import CostLimit
from gateway.graphql.errors import ErrorCodes, bad_user_input, log_errors, translate
from gateway.graphql.executor import executor_class
from gateway.graphql.known import KnownDocuments
from gateway.graphql.limits import (
    Limits,
    ParsedDocuments,
    TokenLimitedParser,
    alias_rule,
    depth_rule,
    pipeline_rules,
)
from gateway.graphql.live import Subscription
from gateway.graphql.resolvers import Mutation, Query
from gateway.graphql.streams import lean_stream
from gateway.graphql.types import Listing
from gateway.graphql.validation import DocumentValidation, validation_memo
from gateway.graphql.websocket import SubscriptionTurns, give_back_turn

# The rules strawberry validates a request's document with before the app adds its own
# (`ExecutionContext.validation_rules`' default).
STRAWBERRY_RULES: tuple[type[ASTValidationRule], ...] = tuple(specified_rules)


class GatewaySchema(strawberry.Schema):
    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        # A subscription is served over WebSocket only: strawberry lets a plain POST run
        # one as a query, which ends in an internal error.
        allowed = kwargs.get("allowed_operation_types")
        if allowed is not None:
            kwargs["allowed_operation_types"] = set(allowed) - {OperationType.SUBSCRIPTION}
        return await super().execute(*args, **kwargs)

    # Set by `build_schema`: the documents whose operations may skip strawberry's pipeline.
    known: KnownDocuments | None = None

    def known_document(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None,
        operation_name: str | None,
    ) -> DocumentNode | None:
        """The parsed document if `query` is a query this app already knows and may run
        without strawberry's extension hooks (`gateway.graphql.known`), else None."""
        known = self.known
        if known is None:
            return None
        return known.document(
            self._schema, query, operation_name, variable_values, CoreOperationType.QUERY
        )

    async def execute_document(
        self,
        document: DocumentNode,
        *,
        variable_values: dict[str, Any] | None,
        context_value: Any,
        operation_name: str | None,
    ) -> ExecutionResult:
        """Runs a document `known_document` handed out, as strawberry's path would."""
        if self.known is not None:
            self.known.queries += 1
        result: Any = graphql_execute(
            self._schema,
            document,
            None,
            context_value,
            variable_values,
            operation_name,
            executor_class=self.execution_context_class,
        )
        if isawaitable(result):
            result = await result
        errors = result.errors
        if errors:
            # As strawberry's path does: logged as they are, answered coded (ErrorCodes).
            log_errors(errors)
            errors = [translate(bad_user_input(error)) for error in errors]
        return ExecutionResult(data=result.data, errors=errors, extensions=result.extensions)

    async def execute_known(
        self,
        query: str | None,
        *,
        variable_values: dict[str, Any] | None,
        context_value: Any,
        operation_name: str | None,
    ) -> ExecutionResult | None:
        """The result of a query this app already knows, run without strawberry's extension
        hooks; None when the query is not one of those."""
        document = self.known_document(query, variable_values, operation_name)
        if document is None:
            return None
        return await self.execute_document(
            document,
            variable_values=variable_values,
            context_value=context_value,
            operation_name=operation_name,
        )

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> Any:
        allowed = allowed_operation_types
        known = self.known
        if known is not None and (allowed is None or OperationType.SUBSCRIPTION in allowed):
            document = known.document(
                self._schema,
                query,
                operation_name,
                variable_values,
                CoreOperationType.SUBSCRIPTION,
            )
            if document is not None:
                known.subscriptions += 1
                return lean_stream(
                    self._schema,
                    self.execution_context_class,
                    document,
                    context=context_value,
                    variables=variable_values,
                    operation_name=operation_name,
                    on_subscribed=give_back_turn,
                )
        return await super().stream(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
            allowed_operation_types=allowed_operation_types,
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)


@functools.cache
def _converted() -> GatewaySchema:
    """The gateway's types converted to a graphql-core schema, once per process.

    strawberry's conversion is ~13 ms of CPU (most of it collecting schema directives), and
    every app made the same one: a test suite starting hundreds of apps, or workers replaced,
    spent it each time. Nothing an app changes lives in it: the graphql-core schema it holds
    is read-only, and points back at this object only for static lookups (directives,
    `Info.schema`)."""
    return GatewaySchema(query=Query, mutation=Mutation, subscription=Subscription, types=[Listing])


def build_schema(
    *,
    max_listings: int = 200,
    max_depth: int = 20,
    max_aliases: int = 200,
    max_tokens: int = 20_000,
    max_root_fields: int = 20,
    max_upstream_cost: int = 12_000,
    introspection: bool = True,
    compiled_execution: bool = True,
    parse_cache_bytes: int = 64 * 1024 * 1024,
) -> strawberry.Schema:
    # The rule classes are made once per schema, and so is the validation memo that holds
    # what they found in each document.
    rules: tuple[type[ASTValidationRule], ...] = (depth_rule(max_depth), alias_rule(max_aliases))
    if not introspection:
        rules += (NoSchemaIntrospectionCustomRule,)
    validated = validation_memo()
    documents = ParsedDocuments(parse_cache_bytes)
    # Factories, not instances: strawberry builds fresh extensions for every request.
    extensions: list[Any] = [
        ErrorCodes,
        # Parsing stops past this many tokens; the largest real query (200 refs) has ~3,000.
        lambda: TokenLimitedParser(max_tokens=max_tokens, documents=documents),
        lambda: DocumentValidation(validated),
        lambda: Limits(rules),
        lambda: ArgumentChecks(max_listings=max_listings),
        lambda: CostLimit(max_root_fields=max_root_fields, max_cost=max_upstream_cost),
        SubscriptionTurns,
    ]
    # The converted types are shared; what an app keeps (its extensions' caches, its plans,
    # its known documents) is its own copy's.
    schema = copy.copy(_converted())
    schema.extensions = tuple(extensions)
    schema.execution_context_class = executor_class(
        compiled=compiled_execution, max_bytes=parse_cache_bytes
    )
    schema.known = KnownDocuments(
        documents=documents,
        validated=validated,
        max_listings=max_listings,
        max_root_fields=max_root_fields,
        max_cost=max_upstream_cost,
        max_tokens=max_tokens,
        rules=pipeline_rules(STRAWBERRY_RULES, rules),
    )
    return schema


def sdl() -> str:
    """The schema's SDL, as checked in at `schema/schema.graphql`."""
    return build_schema().as_str() + "\n"
