// The gateway's public GraphQL API as any frontend reaches it: POST /graphql over HTTP and
// graphql-transport-ws over WebSocket (the vendored graphql-ws client, loaded as a script).
import { authHeaders, connectionParams } from "./token.js";

export const ENDPOINT = new URL("/graphql", window.location.href);

export class RequestFailed extends Error {
  constructor(message, { status = 0, code = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Resolves to the GraphQL response ({data, errors, extensions}) even when it carries errors;
// throws RequestFailed when there is no GraphQL answer at all (network, 5xx page, 401).
export async function query(document, variables = {}) {
  let response;
  try {
    response = await fetch(ENDPOINT, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json;q=0.9",
        ...authHeaders(),
      },
      body: JSON.stringify({ query: document, variables }),
    });
  } catch (error) {
    throw new RequestFailed(`the gateway did not answer (${error.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: handled below
  }
  const firstCode = body?.errors?.[0]?.extensions?.code ?? null;
  if (response.status === 401 || firstCode === "UNAUTHENTICATED") {
    throw new RequestFailed("this gateway needs a client token", {
      status: response.status,
      code: "UNAUTHENTICATED",
    });
  }
  if (!body || (body.data === undefined && !body.errors)) {
    throw new RequestFailed(`the gateway answered HTTP ${response.status}`, {
      status: response.status,
    });
  }
  return body;
}

// A graphql-ws client that reconnects with exponential backoff and jitter, forever, and
// reports its state through `onState(state, detail)`: connecting | connected | waiting |
// closed. `onReconnected` runs after a reconnection, when events may have been missed.
export function liveClient({ onState, onReconnected }) {
  let connectedBefore = false;
  return window.graphqlWs.createClient({
    url: (() => {
      const url = new URL(ENDPOINT);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      return url.toString();
    })(),
    connectionParams,
    lazy: true,
    keepAlive: 15000,
    retryAttempts: Number.POSITIVE_INFINITY,
    // 4401/4403: no token or a refused one; retrying with the same cannot help.
    shouldRetry: (event) => !(event && (event.code === 4401 || event.code === 4403)),
    retryWait: async (retries) => {
      const ms = Math.min(30000, 1000 * 2 ** retries) * (0.5 + Math.random() / 2);
      onState("waiting", ms);
      await new Promise((resolve) => setTimeout(resolve, ms));
    },
    on: {
      connecting: () => onState("connecting"),
      connected: () => {
        onState("connected");
        if (connectedBefore) onReconnected();
        connectedBefore = true;
      },
      closed: (event) => onState("closed", event),
    },
  });
}
