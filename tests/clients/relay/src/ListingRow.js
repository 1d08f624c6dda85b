// One listing, refetchable on its own: Relay refetches it through `node(id:)`.
import { createElement } from "react";
import { graphql, useRefetchableFragment } from "react-relay";
import StatusHistory from "./StatusHistory";

export default function ListingRow({ listing }) {
  const [data, refetch] = useRefetchableFragment(
    graphql`
      fragment ListingRow_listing on Listing
      @refetchable(queryName: "ListingRowRefetchQuery") {
        id
        state
        portals { portal provider state since actionRequired }
        ...StatusHistory_listing
      }
    `,
    listing,
  );
  const reload = () => refetch({}, { fetchPolicy: "network-only" });
  return createElement("tr", { onClick: reload }, [
    createElement("td", { key: "state" }, data.state),
    createElement(StatusHistory, { key: "history", listing: data }),
  ]);
}
