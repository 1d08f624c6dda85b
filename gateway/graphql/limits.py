"""Request limits: document tokens, selection depth and aliases → `QUERY_TOO_COMPLEX`.

Each limit is enforced by a rule of its own that codes its refusal itself, so the error
edge recognises a limit by the rule that raised it, never by the wording of a message:

- tokens: the parser stops past `max_tokens`; when a parse fails, `TokenLimitedParser`
  counts the document's tokens (as the parser does, comments included, stopping one past
  the limit): a failure at or after the first token past the limit is the limit, an
  earlier one a malformed document;
- depth: the nesting level of the deepest field, the root field being level 0, counting
  every field — introspection fields too (strawberry's `QueryDepthLimiter` skips those,
  so a 40-level `__schema { types { ofType { ofType ...` went through);
- aliases: every aliased field, counted once per fragment spread that brings it in;
- graphql-core's own introspection depth rule, coded the same way.

Fragment depths and alias counts are worked out once per fragment, so a document that
spreads fragments into each other many times costs its size, not the size of its expansion.

Parsed documents are kept by their text (`ParsedDocuments`), bounded by the memory they are
estimated to hold (`GATEWAY_PARSE_CACHE_BYTES`), not by their number: 1,024 entries of any
size once let 60 distinct 8 MB documents hold a gigabyte.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Final

from cachetools import LRUCache
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    TokenKind,
    ValidationContext,
    ValidationRule,
)
from graphql.language.lexer import Lexer
from graphql.validation.rules.max_introspection_depth_rule import MaxIntrospectionDepthRule
from strawberry.extensions import SchemaExtension

from gateway.graphql.errors import QUERY_TOO_COMPLEX

_CODE = {"code": QUERY_TOO_COMPLEX}


def too_complex(message: str, nodes: Node | list[Node] | None = None) -> GraphQLError:
    """A refusal by one of the limits, coded where it is made."""
    return GraphQLError(message, nodes, extensions=dict(_CODE))


# --- tokens -----------------------------------------------------------------------------


def token_limit_offset(query: str, max_tokens: int) -> int | None:
    """Where the token one past `max_tokens` starts (comments counted, as the parser
    counts them); None when `query` has no such token or a lexical error comes first."""
    lexer = Lexer(Source(query))
    previous = lexer.token
    count = 0
    try:
        while True:
            token = lexer.advance()
            # Comments are skipped by `advance` but linked in between.
            node = previous.next
            while node is not None and node is not token:
                count += 1
                if count > max_tokens:
                    return node.start
                node = node.next
            if token.kind is TokenKind.EOF:
                return None
            count += 1
            if count > max_tokens:
                return token.start
            previous = token
    except GraphQLSyntaxError:
        return None


def over_token_limit(query: str, max_tokens: int) -> bool:
    """Whether `query` has more than `max_tokens` tokens (a lexical error first means no)."""
    return token_limit_offset(query, max_tokens) is not None


# What a parsed document holds per character of its text: its nodes and its tokens (kept
# linked from its locations) next to the text itself. Measured at 66-78 for queries dense in
# tokens (a one-listing query, 200 inline refs, 6,000 aliases); a long comment holds ~1.
BYTES_PER_CHARACTER: Final = 80
# A document weighing more than this share of the cache is parsed anew for every request.
_LARGEST_SHARE: Final = 16


class ParsedDocuments:
    """Parsed documents by their text, bounded by the memory they are estimated to hold
    (`BYTES_PER_CHARACTER` per character), least recently used dropped first.

    A document heavier than a sixteenth of the bound is never kept: a client sending large
    distinct documents cannot fill the cache with them (nor, through the cache, hold the
    per-document memos keyed by them, which go with their document).

    >>> documents = ParsedDocuments(max_bytes=64 << 20)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.largest = max_bytes // _LARGEST_SHARE
        self._entries: LRUCache[str, tuple[DocumentNode, int]] = LRUCache(
            maxsize=max(1, max_bytes), getsizeof=lambda entry: entry[1]
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def weight(self) -> int:
        """The estimated bytes the kept documents hold."""
        return int(self._entries.currsize)

    def get(self, text: str) -> DocumentNode | None:
        entry = self._entries.get(text)
        return None if entry is None else entry[0]

    def shared_text(self, text: str) -> str:
        """The text of the kept document equal to `text`, else `text`: an operation that
        keeps its text for its life (a subscription) then holds no copy of its own."""
        entry = self._entries.get(text)
        location = None if entry is None else entry[0].loc
        return text if location is None else location.source.body

    def put(self, text: str, document: DocumentNode) -> None:
        weight = len(text) * BYTES_PER_CHARACTER
        if weight <= self.largest:
            self._entries[text] = (document, weight)


class _Release:
    """Collects garbage after every `every_chars` of document text parsed and not kept.

    A request leaves its document in reference cycles (graphql-core's validation context
    and its rules, strawberry's execution context and its extensions) that only the cyclic
    collector frees. It runs after a count of new objects, not of bytes, and a serving
    process runs it rarely (`gateway.process.garbage`): documents of a megabyte, which make
    few objects, piled up between collections, RSS +40 MB per 180 of them over WebSocket
    and on. Collecting the younger generations did not free them, a full collection does
    (it skips what the process froze at start): with it, 720 such documents leave RSS
    where the first 180 took it.
    """

    def __init__(self, every_chars: int) -> None:
        self.every_chars = every_chars
        self.pending = 0

    def parsed(self, chars: int) -> None:
        self.pending += chars
        if self.pending >= self.every_chars:
            self.pending = 0
            gc.collect()


_released = _Release(every_chars=16 * 1024 * 1024)


class TokenLimitedParser(SchemaExtension):
    """Parses with a token limit, keeping parsed documents in a `ParsedDocuments`.

    Takes the place of strawberry's `ParserCache` and `MaxTokensLimiter` together, so a
    document over the limit is refused as `QUERY_TOO_COMPLEX` and any other parse
    failure stays a syntax error (`GRAPHQL_PARSE_FAILED`). strawberry parses (with the
    token limit) and reports a failure as the operation's error on every transport; a
    failure raised from here instead escaped its streaming path (WebSocket operations).
    """

    def __init__(self, *, max_tokens: int, documents: ParsedDocuments) -> None:
        self.max_tokens = max_tokens
        self.documents = documents

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query
        if context.graphql_document is not None or not query:
            yield
            return
        document = self.documents.get(query)
        if document is not None:
            context.graphql_document = document
            yield
            return
        context.parse_options = {**context.parse_options, "max_tokens": self.max_tokens}
        yield
        if context.graphql_document is not None:
            self.documents.put(query, context.graphql_document)
        if self.documents.get(query) is None:
            _released.parsed(len(query))
        for error in context.pre_execution_errors or ():
            if isinstance(error, GraphQLSyntaxError):
                self._code_token_limit(query, error)

    def _code_token_limit(self, query: str, error: GraphQLSyntaxError) -> None:
        # The parser stops at the first token past the limit; a malformed document fails
        # before it, however long it is. The error is strawberry's own, already on its way
        # to the caller: it is recoded where it is.
        limit_at = token_limit_offset(query, self.max_tokens)
        at = min(error.positions or (), default=None)
        if limit_at is not None and at is not None and at >= limit_at:
            error.message = f"the document has more than {self.max_tokens} tokens"
            error.extensions = dict(_CODE)


# --- depth ------------------------------------------------------------------------------


class _Fragments:
    """The document's fragments, with per-fragment results worked out once."""

    def __init__(self, document: DocumentNode) -> None:
        self.definitions = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._memo: dict[str, int] = {}
        self._visiting: set[str] = set()

    def measure(self, name: str, measure: Callable[[SelectionSetNode], int]) -> int:
        if name in self._memo:
            return self._memo[name]
        fragment = self.definitions.get(name)
        if fragment is None or name in self._visiting:
            return 0  # unknown or cyclic: other validation rules refuse the document
        self._visiting.add(name)
        try:
            value = measure(fragment.selection_set)
        finally:
            self._visiting.discard(name)
        self._memo[name] = value
        return value


def _depth(selection_set: SelectionSetNode, fragments: _Fragments) -> int:
    """How many levels below the fields of `selection_set` the deepest field sits."""
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.selection_set is not None:
                deepest = max(deepest, 1 + _depth(selection.selection_set, fragments))
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, fragments))
        elif isinstance(selection, FragmentSpreadNode):
            spread = fragments.measure(selection.name.value, lambda s: _depth(s, fragments))
            deepest = max(deepest, spread)
    return deepest


def _aliases(selection_set: SelectionSetNode, fragments: _Fragments) -> int:
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += selection.alias is not None
            if selection.selection_set is not None:
                count += _aliases(selection.selection_set, fragments)
        elif isinstance(selection, InlineFragmentNode):
            count += _aliases(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            count += fragments.measure(selection.name.value, lambda s: _aliases(s, fragments))
    return count


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def depth_rule(max_depth: int) -> type[ASTValidationRule]:
    """A validation rule refusing any operation nested deeper than `max_depth`."""

    class DepthLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments = _Fragments(context.document)
            for operation in _operations(context.document):
                depth = _depth(operation.selection_set, fragments)
                if depth > max_depth:
                    name = operation.name.value if operation.name else "anonymous"
                    self.report_error(
                        too_complex(
                            f"'{name}' is {depth} levels deep; the limit is {max_depth}",
                            operation,
                        )
                    )

    return DepthLimit


def alias_rule(max_aliases: int) -> type[ASTValidationRule]:
    """A validation rule refusing a document with more than `max_aliases` aliases."""

    class AliasLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments = _Fragments(context.document)
            total = sum(_aliases(o.selection_set, fragments) for o in _operations(context.document))
            if total > max_aliases:
                self.report_error(too_complex(f"{total} aliases; the limit is {max_aliases}"))

    return AliasLimit


class IntrospectionDepthLimit(MaxIntrospectionDepthRule):
    """graphql-core's introspection depth rule, its refusals coded as the other limits."""

    def report_error(self, error: GraphQLError) -> None:
        error.extensions = {**(error.extensions or {}), **_CODE}
        super().report_error(error)


class Limits(SchemaExtension):
    """Adds the depth and alias rules and codes graphql-core's introspection depth rule."""

    def __init__(self, rules: tuple[type[ASTValidationRule], ...]) -> None:
        self.rules = rules

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = pipeline_rules(context.validation_rules, self.rules)
        yield


def pipeline_rules(
    base: tuple[type[ASTValidationRule], ...], rules: tuple[type[ASTValidationRule], ...]
) -> tuple[type[ASTValidationRule], ...]:
    """The rules a request's document is validated with: strawberry's `base` (graphql-core's
    introspection depth rule in its coded form) and the app's own."""
    return (
        *(IntrospectionDepthLimit if rule is MaxIntrospectionDepthRule else rule for rule in base),
        *rules,
    )


__all__ = [
    "QUERY_TOO_COMPLEX",
    "IntrospectionDepthLimit",
    "Limits",
    "ParsedDocuments",
    "TokenLimitedParser",
    "alias_rule",
    "depth_rule",
    "over_token_limit",
    "pipeline_rules",
    "token_limit_offset",
    "too_complex",
]
