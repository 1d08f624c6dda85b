// GraphiQL for this gateway: queries over HTTP, subscriptions over WebSocket
// (graphql-transport-ws, through the vendored graphql-ws client), the explorer plugin,
// and an optional client token from the URL fragment (`#token=…`), kept in memory only.
import { authHeaders, connectionParams, takeTokenFromFragment } from "./token.js";

const DEFAULT_QUERY = `# Listing Status Gateway
# Run with Ctrl-Enter. Subscriptions run over WebSocket.
# Client token: open /graphql#token=… or use the Headers tab.

query Listing($ref: ListingRef!) {
  listing(ref: $ref) {
    state
    portals { portal provider state since message actionRequired }
  }
}
`;

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

function App() {
  const explorer = window.React.useMemo(() => window.GraphiQLPluginExplorer.explorerPlugin(), []);
  return window.React.createElement(window.GraphiQL, {
    fetcher,
    plugins: [explorer],
    defaultQuery: DEFAULT_QUERY,
    // `q`, not `query`: a GET /graphql with `query` is a GraphQL request, not this page.
    query: search.get("q") ?? undefined,
    variables: search.get("variables") ?? undefined,
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
