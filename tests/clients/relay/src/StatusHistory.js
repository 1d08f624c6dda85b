// A classified's status history as a Relay connection, a page at a time.
import { createElement } from "react";
import { graphql, usePaginationFragment } from "react-relay";

export default function StatusHistory({ listing }) {
  const { data, hasNext, loadNext } = usePaginationFragment(
    graphql`
      fragment StatusHistory_listing on Listing
      @argumentDefinitions(count: { type: "Int", defaultValue: 5 }, cursor: { type: "String" })
      @refetchable(queryName: "StatusHistoryPaginationQuery") {
        classified {
          statuses(first: $count, after: $cursor) @connection(key: "StatusHistory_statuses") {
            edges { node { id status subStatus date portals } }
          }
        }
      }
    `,
    listing,
  );
  const edges = data.classified?.statuses?.edges ?? [];
  return createElement("td", null, [
    ...edges.map(({ node }) => createElement("p", { key: node.id }, `${node.date} ${node.status}`)),
    hasNext && createElement("button", { key: "more", onClick: () => loadNext(5) }, "Older"),
  ]);
}
