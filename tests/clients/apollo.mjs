// Apollo Client against the gateway: automatic persisted queries (the document's hash
// first, the document itself only after PERSISTED_QUERY_NOT_FOUND) and a classified's whole
// status history paged with `fetchMore`, merged in the cache by `relayStylePagination`.
//
//   node apollo.mjs URL CLASSIFIED_ID AGENCY PAGE_SIZE
//
// Prints one JSON object: every HTTP request made (with or without the document, the error
// codes answered) and the history as the cache holds it after the last page.
import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { relayStylePagination } from "@apollo/client/utilities";

const [url, classifiedId, agency, pageSize] = process.argv.slice(2);

// What went over the wire, for the test to check: every fetch is recorded.
const requests = [];
const fetchOnce = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const body = JSON.parse(init.body);
  const response = await fetchOnce(input, init);
  const answer = await response.clone().json();
  requests.push({
    document: typeof body.query === "string",
    hash: body.extensions?.persistedQuery?.sha256Hash ?? null,
    variables: body.variables,
    status: response.status,
    codes: (answer.errors ?? []).map((error) => error.extensions?.code),
  });
  return response;
};

// --- the app's client --------------------------------------------------------------------
const sha256 = (document) => createHash("sha256").update(document).digest("hex");

const client = new ApolloClient({
  link: new PersistedQueryLink({ sha256 }).concat(
    new HttpLink({ uri: url, headers: { "x-intermediary-id": agency } }),
  ),
  cache: new InMemoryCache({
    typePolicies: {
      // One merged list per filter: `status` and `portal` pick the list, `first`/`after` page it.
      Classified: { fields: { statuses: relayStylePagination(["status", "portal"]) } },
    },
  }),
});

const HISTORY = gql`
  query History($id: ID!, $first: Int, $after: String) {
    listing(ref: { classifiedId: $id }) {
      id
      classified {
        id
        statuses(first: $first, after: $after) {
          edges { cursor node { id status date } }
          pageInfo { hasNextPage endCursor hasPreviousPage startCursor }
        }
      }
    }
  }
`;

const variables = { id: classifiedId, first: Number(pageSize) };
const history = client.watchQuery({ query: HISTORY, variables });
// The first page; the subscription keeps the query watched while more pages are fetched.
let subscription;
const first = await new Promise((resolve, reject) => {
  subscription = history.subscribe({
    next: (value) => value.dataState === "complete" && resolve(value),
    error: reject,
  });
});
let statuses = first.data.listing.classified.statuses;
while (statuses.pageInfo.hasNextPage) {
  await history.fetchMore({ variables: { after: statuses.pageInfo.endCursor } });
  // The merged list, as the cache now holds it: every page so far, in order.
  const cached = client.readQuery({ query: HISTORY, variables: history.variables });
  statuses = cached.listing.classified.statuses;
}
subscription.unsubscribe();
// ------------------------------------------------------------------------------------------

console.log(
  JSON.stringify({
    requests,
    ids: statuses.edges.map((edge) => edge.node.id),
    pageInfo: statuses.pageInfo,
  }),
);
