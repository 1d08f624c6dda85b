// graphql-ws's own client against the gateway's WebSocket endpoint (graphql-transport-ws):
// subscribes to a classified's status changes and prints the first event as JSON.
//
//   node subscribe.mjs WS_URL CLASSIFIED_ID
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, classifiedId] = process.argv.slice(2);

// --- the app's client --------------------------------------------------------------------
const client = createClient({ url, webSocketImpl: WebSocket });

const events = client.iterate({
  query: `subscription Watch($ids: [ID!]) {
    classifiedStatusChanged(classifiedIds: $ids) {
      classifiedId
      status { status date }
      listing { state portals { portal state } }
    }
  }`,
  variables: { ids: [classifiedId] },
});
const { value } = await events.next();
// ------------------------------------------------------------------------------------------

console.log(JSON.stringify(value));
await events.return();
await client.dispose();
