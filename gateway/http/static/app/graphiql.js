// GraphiQL for this gateway: queries over HTTP, subscriptions over WebSocket
// (graphql-transport-ws, through the vendored graphql-ws client), the explorer plugin,
// and an optional client token from the URL fragment (`#token=…`), kept in memory only.
//
// A first visit opens two tabs, ready to run: the demo's query with its variables filled in
// (the listings the page names in its `graphiql-default-refs` meta, as GATEWAY_BOARD_REFS or
// the demo give them), and the demo's live subscription. A link with `?q=` opens that instead.
import { parseRef } from "./refs.js";
import { authHeaders, connectionParams, takeTokenFromFragment } from "./token.js";

const DEMO_QUERY = `# Listing Status Gateway. Run with Ctrl-Enter.
# The listings are in Variables below (refs as on /board);
# the Live tab watches status changes over WebSocket.
# Client token: /graphql#token=… or the Headers tab.

query Demo($refs: [ListingRef!]!) {
  listings(refs: $refs) {
    id
    state
    portals { portal provider state since actionRequired }
    classified { latestStatus { status subStatus message date } }
    legacy { portals { portal publish { active online remoteAdId } } }
  }
}
`;

// The subscription `gateway demo` prints: every new V3 status of this agency's listings.
const LIVE_SUBSCRIPTION = `subscription Live {
  classifiedStatusChanged {
    classifiedId
    receivedAt
    status { status subStatus message date }
    listing { state portals { portal state since } }
  }
}
`;

function defaultRefs() {
  const named = document.querySelector('meta[name="graphiql-default-refs"]')?.content ?? "";
  return named.split("\n").map(parseRef).filter(Boolean);
}

takeTokenFromFragment();

const search = new URLSearchParams(window.location.search);
const endpoint = new URL(window.location.pathname, window.location.href);
const socketUrl = new URL(endpoint);
socketUrl.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

const wsClient = window.graphqlWs.createClient({
  url: socketUrl.toString(),
  connectionParams,
  lazy: true,
  retryAttempts: 5,
});

const fetcher = window.GraphiQL.createFetcher({
  url: endpoint.toString(),
  headers: authHeaders(),
  wsClient,
});

function remember(key, value) {
  const params = new URLSearchParams(window.location.search);
  if (value) params.set(key, value);
  else params.delete(key);
  window.history.replaceState(null, "", `?${params}${window.location.hash}`);
}

function storedTabs() {
  try {
    return window.localStorage.getItem("graphiql:tabState") !== null;
  } catch {
    return false; // storage refused: GraphiQL keeps nothing either
  }
}

// The two tabs open on a first visit only: a returning visitor finds the tabs they left.
const shared = search.get("q");
const firstVisit = shared === null && !storedTabs();
const demoVariables = JSON.stringify({ refs: defaultRefs() }, null, 2);
const firstTabs = [{ query: DEMO_QUERY, variables: demoVariables }, { query: LIVE_SUBSCRIPTION }];

function App() {
  const explorer = window.React.useMemo(() => window.GraphiQLPluginExplorer.explorerPlugin(), []);
  return window.React.createElement(window.GraphiQL, {
    fetcher,
    plugins: [explorer],
    defaultQuery: DEMO_QUERY,
    defaultTabs: firstVisit ? firstTabs : undefined,
    // `q`, not `query`: a GET /graphql with `query` is a GraphQL request, not this page.
    query: shared ?? undefined,
    // GraphiQL fills the variables editor from this prop, not from the first default tab.
    variables: search.get("variables") ?? (firstVisit ? demoVariables : undefined),
    onEditQuery: (query) => remember("q", query),
    onEditVariables: (variables) => remember("variables", variables),
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    // Headers may hold a token: never persist them to localStorage.
    shouldPersistHeaders: false,
    inputValueDeprecation: true,
  });
}

window.ReactDOM.createRoot(document.getElementById("graphiql")).render(
  window.React.createElement(App),
);
