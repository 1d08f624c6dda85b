// A Node GraphQL gateway over the same two upstreams, for the benchmark to compare with:
// Apollo Server's standalone server, DataLoader per request (one V3 history read per
// classified, one legacy `POST /status/` per user and chunk of 100 ads), undici's pool of
// 100 keep-alive connections per upstream, and no cache. It answers the benchmark's
// `listings` query with the data the gateway answers (tests/test_bench_node.py compares
// them), applying the same state rules (docs/upstreams.md), so that both do the same work.
//
//   node bench/node/server.mjs   # settings from the environment, see SETTINGS below
//
// Prints "Node gateway listening on http://127.0.0.1:PORT/graphql" once it accepts.

import { createHash } from "node:crypto";

import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import DataLoader from "dataloader";
import { Agent, request } from "undici";

const SETTINGS = {
  v3Url: process.env.NODE_GATEWAY_V3_URL,
  tokenUrl: process.env.NODE_GATEWAY_V3_TOKEN_URL,
  clientId: process.env.NODE_GATEWAY_V3_CLIENT_ID,
  clientSecret: process.env.NODE_GATEWAY_V3_CLIENT_SECRET,
  audience: process.env.NODE_GATEWAY_V3_AUDIENCE,
  tenant: process.env.NODE_GATEWAY_V3_INTERMEDIARY_ID,
  legacyUrl: process.env.NODE_GATEWAY_LEGACY_URL,
  legacyKey: process.env.NODE_GATEWAY_LEGACY_API_KEY,
  port: Number(process.env.NODE_GATEWAY_PORT ?? "0"),
};
for (const [name, value] of Object.entries(SETTINGS)) {
  if (value === undefined || value === "") {
    console.error(`missing setting ${name} (NODE_GATEWAY_*)`);
    process.exit(2);
  }
}

const USER_AGENT = "NodeGateway/1.0 node/20 linux/6";
const MAX_BATCH = 100;
const dispatcher = new Agent({ connections: 100, keepAliveTimeout: 60_000 });

const typeDefs = `#graphql
  input LegacyAdKey { userId: Int!, adId: Int! }
  input ListingRef { classifiedId: String, legacy: LegacyAdKey }
  type PortalState {
    portal: String!, provider: String!, state: String!, since: String, message: String
    actionRequired: Boolean!
  }
  type ClassifiedStatus {
    id: String!, status: String!, subStatus: String, message: String, date: String!
    portals: [String!]!, actionRequired: Boolean!
  }
  type PageInfo { hasNextPage: Boolean!, endCursor: String }
  type ClassifiedStatusConnection { nodes: [ClassifiedStatus!]!, pageInfo: PageInfo! }
  type Classified {
    latestStatus: ClassifiedStatus
    statuses(first: Int = 20): ClassifiedStatusConnection!
  }
  type LegacyPublish { active: Boolean!, online: Boolean!, startDate: String, remoteAdId: String }
  type LegacyFeature { feature: String!, active: Boolean! }
  type LegacyPortal { portal: String!, publish: LegacyPublish!, features: [LegacyFeature!]! }
  type Legacy { portals: [LegacyPortal!]! }
  type Listing {
    id: ID!, state: String!, portals: [PortalState!]!, classified: Classified, legacy: Legacy
  }
  type Query { listings(refs: [ListingRef!]!): [Listing!]! }
`;

// --- upstream reads ----------------------------------------------------------------------

async function readJson(url, options) {
  const answer = await request(url, { dispatcher, ...options });
  const text = await answer.body.text();
  if (answer.statusCode !== 200) {
    throw new Error(`${url} answered HTTP ${answer.statusCode}: ${text.slice(0, 200)}`);
  }
  return JSON.parse(text);
}

let token = null; // one client-credentials token for the process, as a gateway would keep it
async function bearer() {
  token ??= readJson(SETTINGS.tokenUrl, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      client_id: SETTINGS.clientId,
      client_secret: SETTINGS.clientSecret,
      grant_type: "client_credentials",
      audience: SETTINGS.audience,
      intermediary_id: SETTINGS.tenant,
    }),
  }).then((answer) => `Bearer ${answer.access_token}`);
  return token;
}

async function history(classifiedId) {
  const headers = { "user-agent": USER_AGENT, authorization: await bearer() };
  const base = `${SETTINGS.v3Url}/classifieds/${encodeURIComponent(classifiedId)}/statuses`;
  const items = [];
  let next = null;
  do {
    const query = next === null ? "limit=100" : `limit=100&nextToken=${encodeURIComponent(next)}`;
    const page = await readJson(`${base}?${query}`, { method: "GET", headers });
    items.push(...page.items);
    next = page.nextToken || null;
  } while (next !== null);
  return sortedItems(classifiedId, items);
}

async function legacyAds(keys) {
  // keys: "userId:adId", one POST /status/ per user and chunk of MAX_BATCH ads.
  const byUser = new Map();
  for (const key of keys) {
    const [user, ad] = key.split(":").map(Number);
    if (!byUser.has(user)) byUser.set(user, []);
    byUser.get(user).push(ad);
  }
  const calls = [];
  for (const [userId, ads] of byUser) {
    for (let i = 0; i < ads.length; i += MAX_BATCH) {
      calls.push(
        readJson(`${SETTINGS.legacyUrl}/status/`, {
          method: "POST",
          headers: { "content-type": "application/json", authentication: SETTINGS.legacyKey },
          body: JSON.stringify({ userId, adId: ads.slice(i, i + MAX_BATCH) }),
        }).then((answer) => {
          if (answer.result !== true) throw new Error(`legacy answered ${JSON.stringify(answer)}`);
          return answer.data.map((ad) => [`${userId}:${ad.adId}`, ad]);
        }),
      );
    }
  }
  const found = new Map((await Promise.all(calls)).flat());
  return keys.map((key) => (found.has(key) ? legacyAd(found.get(key)) : null));
}

// --- the state rules (gateway/domain/state.py) ---------------------------------------------

const PORTALS = ["SL", "BU", "COM", "BD", "LR", "LI", "SLC", "SLN"];
const LEGACY_PORTALS = { marktplaats: "MARKTPLAATS", tweedehands: "TWEEDEHANDS", website: "WEBSITE" };
const CLASSIFIED_STATES = {
  RECEIVING: "PENDING",
  RECEIVED: "PENDING",
  CREATING: "PROCESSING",
  UPDATING: "PROCESSING",
  CREATED: "ONLINE",
  UPDATED: "ONLINE",
  RECEIVING_FAILED: "FAILED",
  CREATING_FAILED: "FAILED",
  UPDATING_FAILED: "FAILED",
  DELETING_FAILED: "FAILED",
  DELETING: "DELETING",
  DELETED: "DELETED",
};
const PRECEDENCE = ["ONLINE", "PROCESSING", "PENDING", "DELETING", "OFFLINE", "DELETED", "NOT_PUBLISHED"];
const LEGACY_MESSAGES = {
  FAILED: "Publishing failed at the portal",
  PROCESSING: "Being sent to the portal",
  PENDING: "Queued for publishing",
  ONLINE: "Published and visible",
  OFFLINE: "Not visible on the portal",
  NOT_PUBLISHED: "Never published",
};

const pad = (n, width = 2) => String(n).padStart(width, "0");

// Python's datetime.isoformat(), which the gateway's answers and status ids use.
function utcIso(ms) {
  const d = new Date(ms);
  const fraction = d.getUTCMilliseconds() ? `.${pad(d.getUTCMilliseconds() * 1000, 6)}` : "";
  return (
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${fraction}+00:00`
  );
}

const offsets = new Intl.DateTimeFormat("en-US", {
  timeZone: "Europe/Amsterdam",
  timeZoneName: "longOffset",
});
function amsterdamOffsetMinutes(ms) {
  const name = offsets.formatToParts(new Date(ms)).find((p) => p.type === "timeZoneName").value;
  const match = /GMT([+-])(\d{2}):(\d{2})/.exec(name);
  return match ? (match[1] === "-" ? -1 : 1) * (Number(match[2]) * 60 + Number(match[3])) : 0;
}

const legacyDates = new Map();
function legacyDate(value) {
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (!text || text.startsWith("0000-00-00")) return null;
  let known = legacyDates.get(text);
  if (known === undefined) {
    const match = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})$/.exec(text);
    if (!match) {
      known = null;
    } else {
      const naive = Date.UTC(match[1], match[2] - 1, match[3], match[4], match[5], match[6]);
      const offset = amsterdamOffsetMinutes(naive - amsterdamOffsetMinutes(naive) * 60_000);
      const sign = offset < 0 ? "-" : "+";
      const abs = Math.abs(offset);
      known = `${text.slice(0, 10)}T${text.slice(11)}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
    }
    legacyDates.set(text, known);
  }
  return known;
}

function flag(value) {
  if (typeof value === "boolean") return value;
  if (typeof value === "number") return value !== 0;
  if (typeof value === "string") return ["1", "true", "yes"].includes(value.trim().toLowerCase());
  return false;
}

function legacyAd(raw) {
  const portals = [];
  for (const entry of raw.portals ?? []) {
    const portal = LEGACY_PORTALS[String(entry.portal ?? "").trim().toLowerCase()];
    if (portal === undefined) continue;
    const p = entry.publish ?? {};
    const remote = Number(p.remoteAdId);
    portals.push({
      portal,
      publish: {
        pending: flag(p.pending),
        pendingDate: legacyDate(p.pendingDate),
        processing: flag(p.processing),
        processingDate: legacyDate(p.processingDate),
        error: flag(p.error),
        active: flag(p.active),
        online: flag(p.online),
        startDate: legacyDate(p.startDate),
        closeDate: legacyDate(p.closeDate),
        remoteAdId: Number.isInteger(remote) && remote !== 0 ? String(remote) : null,
      },
      features: Array.isArray(entry.features)
        ? entry.features
            .filter((f) => f && typeof f.feature === "string" && f.feature)
            .map((f) => ({ feature: f.feature, active: flag(f.active) }))
        : [],
    });
  }
  return { portals };
}

function legacyState(p) {
  if (p.error) return "FAILED";
  if (p.processing) return "PROCESSING";
  if (p.pending) return "PENDING";
  if (p.active) return p.online ? "ONLINE" : "OFFLINE";
  if (p.closeDate !== null) return "OFFLINE";
  return "NOT_PUBLISHED";
}

function legacyPortalStates(ad) {
  return ad.portals.map(({ portal, publish }) => {
    const state = legacyState(publish);
    const since = {
      PROCESSING: publish.processingDate,
      PENDING: publish.pendingDate,
      ONLINE: publish.startDate,
      OFFLINE: publish.closeDate ?? publish.startDate,
    }[state];
    return {
      portal,
      provider: "LEGACY",
      state,
      since: since ?? null,
      message: LEGACY_MESSAGES[state] ?? null,
      actionRequired: state === "FAILED",
    };
  });
}

const statusIds = new Map();
function statusId(owner, iso, status) {
  const key = `${owner}\u0000${iso}\u0000${status}`;
  let id = statusIds.get(key);
  if (id === undefined) {
    id = `s-${createHash("sha256").update(key).digest("hex").slice(0, 32)}`;
    if (statusIds.size > 8192) statusIds.clear();
    statusIds.set(key, id);
  }
  return id;
}

function sortedItems(owner, raw) {
  const items = raw.map((item, index) => {
    const ms = Date.parse(item.statusDate);
    const date = utcIso(ms);
    let subStatus = item.subStatus || null;
    // The vendor's table pairs RECEIVED with RECEIVING_PATCH, a typo (docs/upstreams.md).
    if (subStatus === "RECEIVING_PATCH" && item.status === "RECEIVED") subStatus = "RECEIVED_PATCH";
    return {
      index,
      ms,
      id: item.statusId || statusId(owner, date, item.status),
      status: item.status,
      subStatus,
      message: item.message ?? null,
      date,
      // Known portals in first-seen order, without repeats.
      portals: [...new Set(item.portals ?? [])].filter((p) => PORTALS.includes(p)),
      actionRequired: false,
    };
  });
  // Newest first; a stable sort keeps upstream order among equal dates, as the gateway does.
  return items.sort((a, b) => b.ms - a.ms || a.index - b.index);
}

function classifiedState(item) {
  const state = CLASSIFIED_STATES[item.status];
  if (state === "PENDING" && (item.subStatus ?? "").endsWith("_DELETE")) return "DELETING";
  return state;
}

function v3PortalStates(items) {
  const newest = new Map();
  for (const item of items) {
    if (classifiedState(item) === undefined) continue;
    for (const portal of item.portals) {
      if (!PORTALS.includes(portal)) continue;
      const current = newest.get(portal);
      if (current === undefined || item.ms > current.ms) newest.set(portal, item);
    }
  }
  return PORTALS.filter((p) => newest.has(p)).map((portal) => {
    const item = newest.get(portal);
    return {
      portal,
      provider: "CLASSIFIEDS_V3",
      state: classifiedState(item),
      since: item.date,
      message: item.message,
      actionRequired: false,
    };
  });
}

function overall(portals) {
  const present = new Set(portals.map((p) => p.state));
  if (present.has("FAILED")) return "FAILED";
  return PRECEDENCE.find((state) => present.has(state)) ?? "NOT_PUBLISHED";
}

// --- the schema's resolvers ---------------------------------------------------------------

class Listing {
  constructor(ref, loaders) {
    this.ref = ref;
    this.loaders = loaders;
    const legacy = ref.legacy ? `${ref.legacy.userId}:${ref.legacy.adId}` : "";
    this.id = Buffer.from(`Listing:${legacy}|${ref.classifiedId ?? ""}`).toString("base64url");
  }

  history() {
    return this.ref.classifiedId ? this.loaders.history.load(this.ref.classifiedId) : null;
  }

  legacyAd() {
    const key = this.ref.legacy;
    return key ? this.loaders.legacy.load(`${key.userId}:${key.adId}`) : null;
  }

  async unified() {
    this.portalStates ??= Promise.all([this.history(), this.legacyAd()]).then(([items, ad]) => [
      ...(items ? v3PortalStates(items) : []),
      ...(ad ? legacyPortalStates(ad) : []),
    ]);
    return this.portalStates;
  }

  async portals() {
    return this.unified();
  }

  async state() {
    return overall(await this.unified());
  }

  async classified() {
    const items = await this.history();
    return items === null ? null : { items };
  }

  async legacy() {
    return this.legacyAd();
  }
}

// The gateway's keyset cursor (gateway/domain/cursors.py): the last node's date and id.
const keysetCursor = (item) => Buffer.from(`ks:${item.date}|${item.id}`).toString("base64url");

const resolvers = {
  Query: {
    listings(_, { refs }) {
      const loaders = {
        history: new DataLoader(async (ids) => Promise.all(ids.map((id) => history(id).catch((e) => e)))),
        legacy: new DataLoader(legacyAds, { maxBatchSize: 1000 }),
      };
      return refs.map((ref) => new Listing(ref, loaders));
    },
  },
  Classified: {
    latestStatus: ({ items }) => items[0] ?? null,
    statuses: ({ items }, { first }) => {
      const nodes = items.slice(0, first);
      return {
        nodes,
        pageInfo: {
          hasNextPage: items.length > first,
          // The last edge's cursor, on the last page too (the Relay spec, as the gateway).
          endCursor: nodes.length ? keysetCursor(nodes[nodes.length - 1]) : null,
        },
      };
    },
  },
};

const server = new ApolloServer({ typeDefs, resolvers, introspection: false });
const { url } = await startStandaloneServer(server, {
  listen: { host: "127.0.0.1", port: SETTINGS.port },
});
console.log(`Node gateway listening on ${url.replace(/\/$/, "")}/graphql`);

const stop = async () => {
  await server.stop();
  await dispatcher.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
