// The board of a small Relay app: one row per listing, each row a fragment of its own.
import { createElement } from "react";
import { graphql, useLazyLoadQuery } from "react-relay";
import ListingRow from "./ListingRow";

export default function Board({ refs }) {
  const data = useLazyLoadQuery(
    graphql`
      query BoardQuery($refs: [ListingRef!]!) {
        listings(refs: $refs) {
          id
          ...ListingRow_listing
        }
      }
    `,
    { refs },
  );
  return data.listings.map((listing) => createElement(ListingRow, { key: listing.id, listing }));
}
