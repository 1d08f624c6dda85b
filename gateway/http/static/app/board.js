// The status board: one row per listing, one chip per portal, live over WebSocket.
// Built only on the public GraphQL API, as any frontend app would be.
import {
  PROVIDERS,
  STATES,
  headerRows,
  refreshTimes,
  renderBars,
  rowElement,
  stateInfo,
} from "./board-view.js";
import { RequestFailed, liveClient, query } from "./graphql.js";
import { formatRef, parseRefs } from "./refs.js";
import { hasToken, setToken, takeTokenFromFragment } from "./token.js";

const CELL = "fragment Cell on PortalStatus { portal provider state since message actionRequired }";
const LISTING = "id classifiedId legacyAd { userId adId } state";
// Changes of both providers; each brings the listing as it now stands. `after` resumes after
// the last change seen, so a reconnection replays what passed meanwhile.
const CHANGED = `subscription BoardChanges($refs: [ListingRef!]!, $after: String) {
  listingChanged(refs: $refs, after: $after) {
    cursor provider changedPortals
    listing { ${LISTING} portals { ...Cell } }
  }
}
${CELL}`;

const $ = (id) => document.getElementById(id);
const table = $("board");
const notice = $("notice");

const board = {
  rows: [], // {key, ref, state, actionRequired, cells: Map, errors: [], stale, loading}
  filter: "",
  extraPortals: new Map(PROVIDERS.map((p) => [p.id, []])),
};

// Each provider's portals in their own aliased field: when one upstream fails, the other
// provider's chips still show (a Listing's combined `portals` is null then).
function boardQuery(refs) {
  const v3 = [];
  const legacy = [];
  refs.forEach((ref, index) => {
    if (ref.classifiedId) v3.push([index, { classifiedId: ref.classifiedId }]);
    if (ref.legacy) legacy.push([index, { legacy: ref.legacy }]);
  });
  const fields = [`listings(refs: $refs) { ${LISTING} }`];
  const params = ["$refs: [ListingRef!]!"];
  const variables = { refs };
  if (v3.length) {
    fields.push("v3: listings(refs: $v3) { portals { ...Cell } }");
    params.push("$v3: [ListingRef!]!");
    variables.v3 = v3.map(([, ref]) => ref);
  }
  if (legacy.length) {
    fields.push("legacy: listings(refs: $legacy) { portals { ...Cell } }");
    params.push("$legacy: [ListingRef!]!");
    variables.legacy = legacy.map(([, ref]) => ref);
  }
  const document = `query Board(${params.join(", ")}) {\n  ${fields.join("\n  ")}\n}\n${CELL}`;
  return {
    document,
    variables,
    rowOf: { listings: refs.map((_, i) => i), v3: v3.map(([i]) => i), legacy: legacy.map(([i]) => i) },
  };
}

const PROVIDER_OF_ALIAS = { v3: "CLASSIFIEDS_V3", legacy: "LEGACY" };
const PROVIDER_OF_UPSTREAM = Object.fromEntries(PROVIDERS.map((p) => [p.upstream, p.id]));

// extensions.stale: [{classifiedId, ageSeconds}] for classifieds answered from a page past
// its TTL while V3 failed (stale-if-error). Returns row index -> age in seconds (or null).
function staleRows(extensions, rows) {
  const stale = extensions?.stale;
  const hit = new Map();
  if (!stale) return hit;
  const entries = Array.isArray(stale) ? stale : [stale];
  for (const [index, row] of rows.entries()) {
    const entry = entries.find((e) => e && e.classifiedId === row.ref.classifiedId);
    if (entry) hit.set(index, entry.ageSeconds ?? null);
  }
  if (!hit.size) for (const index of rows.keys()) hit.set(index, null);
  return hit;
}

// Turns one GraphQL answer into row states, for `refs` (all rows, or one on a live update).
function readAnswer(refs, plan, answer) {
  const rows = refs.map((ref) => ({
    key: formatRef(ref),
    ref,
    state: null,
    actionRequired: false,
    cells: new Map(),
    errors: [],
    stale: false,
    loading: false,
  }));
  const data = answer.data ?? {};
  (data.listings ?? []).forEach((listing, i) => {
    const row = rows[plan.rowOf.listings[i]];
    if (listing) row.state = listing.state;
  });
  for (const alias of ["v3", "legacy"]) {
    (data[alias] ?? []).forEach((listing, i) => {
      const row = rows[plan.rowOf[alias][i]];
      for (const cell of listing?.portals ?? []) {
        row.cells.set(cell.portal, cell);
        row.actionRequired ||= cell.actionRequired;
        notePortal(cell.provider, cell.portal);
      }
    });
  }
  const general = [];
  for (const error of answer.errors ?? []) {
    const [alias, index] = error.path ?? [];
    const rowIndex = plan.rowOf[alias]?.[index];
    const entry = {
      code: error.extensions?.code ?? null,
      upstream: error.extensions?.upstream ?? null,
      message: error.message,
    };
    entry.provider = PROVIDER_OF_UPSTREAM[entry.upstream] ?? PROVIDER_OF_ALIAS[alias] ?? null;
    if (rowIndex === undefined) {
      general.push(entry);
      continue;
    }
    const row = rows[rowIndex];
    if (!row.errors.some((e) => e.code === entry.code && e.upstream === entry.upstream)) {
      row.errors.push(entry);
    }
  }
  for (const [index, age] of staleRows(answer.extensions, rows)) rows[index].stale = { age };
  return { rows, general };
}

function notePortal(provider, portal) {
  const known = PROVIDERS.find((p) => p.id === provider);
  const extra = board.extraPortals.get(provider);
  if (known && !known.portals.includes(portal) && !extra.includes(portal)) extra.push(portal);
}

function portalsOf(provider) {
  return [...PROVIDERS.find((p) => p.id === provider).portals, ...board.extraPortals.get(provider)];
}

async function fetchRows(refs) {
  const plan = boardQuery(refs);
  const answer = await query(plan.document, plan.variables);
  return readAnswer(refs, plan, answer);
}

function showNotice(text) {
  notice.textContent = text ?? "";
  notice.hidden = !text;
}

function askForToken() {
  const form = $("token-form");
  form.hidden = false;
  $("token-input").focus();
}

function handleFailure(error) {
  if (error instanceof RequestFailed && error.code === "UNAUTHENTICATED") {
    showNotice(hasToken() ? "The gateway refused this client token." : "This gateway needs a client token.");
    askForToken();
  } else {
    showNotice(`Could not load the board: ${error.message}`);
  }
}

// ---- rendering -------------------------------------------------------------------------

function render() {
  const [top, bottom] = headerRows(portalsOf);
  table.tHead.replaceChildren(top, bottom);
  table.tBodies[0].replaceChildren(...board.rows.map((row) => rowElement(row, portalsOf)));
  $("empty").hidden = board.rows.length > 0;
  applyFilter();
}

function counts() {
  const result = {};
  for (const row of board.rows) {
    if (row.loading) continue;
    const state = row.state ?? "UNKNOWN";
    result[state] = (result[state] ?? 0) + 1;
  }
  return result;
}

function applyFilter() {
  for (const tr of table.tBodies[0].rows) {
    tr.hidden = Boolean(board.filter) && tr.dataset.state !== board.filter;
  }
  $("filter").value = board.filter;
  renderBars($("bars"), counts(), board.filter, setFilter);
}

function setFilter(state) {
  board.filter = state;
  applyFilter();
}

function replaceRow(updated) {
  const index = board.rows.findIndex((row) => row.key === updated.key);
  if (index < 0) return;
  const before = board.rows[index];
  board.rows[index] = updated;
  const old = table.tBodies[0].querySelector(`tr[data-ref="${CSS.escape(updated.key)}"]`);
  const tr = rowElement(updated, portalsOf);
  // Highlight what changed: the row, and each chip whose state or date moved.
  for (const td of tr.querySelectorAll("td[data-portal]")) {
    const was = before.cells.get(td.dataset.portal);
    const now = updated.cells.get(td.dataset.portal);
    if (now && (!was || was.state !== now.state || was.since !== now.since)) td.classList.add("changed");
  }
  tr.classList.add("changed");
  tr.addEventListener("animationend", () => tr.classList.remove("changed"), { once: true });
  if (old) old.replaceWith(tr);
  applyFilter();
  const label = updated.ref.classifiedId ?? updated.key;
  $("announce").textContent = `${label} updated: ${stateInfo(updated.state).label}`;
}

// ---- loading ---------------------------------------------------------------------------

let loadSerial = 0;

async function loadAll() {
  const serial = ++loadSerial;
  const refs = board.rows.map((row) => row.ref);
  if (!refs.length) {
    render();
    return;
  }
  try {
    const { rows, general } = await fetchRows(refs);
    if (serial !== loadSerial) return;
    board.rows = rows;
    showNotice(general.length ? general.map((e) => e.message).join("; ") : "");
    render();
    startLive();
  } catch (error) {
    if (serial !== loadSerial) return;
    board.rows.forEach((row) => { row.loading = false; });
    render();
    handleFailure(error);
  }
}

async function reloadRow(key) {
  const row = board.rows.find((candidate) => candidate.key === key);
  if (!row) return;
  try {
    const { rows } = await fetchRows([row.ref]);
    replaceRow(rows[0]);
  } catch (error) {
    handleFailure(error);
  }
}

// A change brings its listing: the row is redrawn from it, with no query of its own. When a
// source failed (portals null), the board's query says which provider, so the row is read.
function applyChange(change) {
  const listing = change.listing;
  const key = formatRef({ classifiedId: listing.classifiedId, legacy: listing.legacyAd });
  const row = board.rows.find((candidate) => candidate.key === key);
  if (!row) return;
  if (!listing.portals) {
    reloadRow(key);
    return;
  }
  const updated = {
    key, ref: row.ref, state: listing.state, actionRequired: false,
    cells: new Map(), errors: [], stale: false, loading: false,
  };
  for (const cell of listing.portals) {
    updated.cells.set(cell.portal, cell);
    updated.actionRequired ||= cell.actionRequired;
    notePortal(cell.provider, cell.portal);
  }
  replaceRow(updated);
}

function showRefs(refs) {
  board.rows = refs.map((ref) => ({
    key: formatRef(ref), ref, state: null, actionRequired: false,
    cells: new Map(), errors: [], stale: false, loading: true,
  }));
  $("refs-input").value = refs.map(formatRef).join("\n");
  render();
  loadAll();
}

// ---- live updates ----------------------------------------------------------------------

let client = null;
let stopSubscription = null;
let liveWatched = "";
let liveFailure = null;
// The subscription's payload: the client sends it again on every reconnection, so `after`
// moves with each change received and a reconnection resumes after the last one.
let livePayload = null;

function setLive(state, detail) {
  // Once the subscription failed for good, the lazy socket's closing says nothing new.
  if (state === "failed") liveFailure = detail ?? "";
  else if (state === "closed" && liveFailure !== null) return setLive("failed", liveFailure);
  else if (state !== "closed") liveFailure = null;
  const live = $("live");
  live.dataset.state = state;
  const text = {
    connecting: "live updates: connecting…",
    connected: "live updates: connected",
    waiting: `live updates: connection lost, retrying in ${Math.ceil((detail ?? 0) / 1000)} s`,
    closed: "live updates: disconnected",
    off: "live updates: off",
    failed: `live updates unavailable: ${detail ?? ""}`,
  }[state];
  $("live-text").textContent = text;
}

function ensureClient() {
  if (client) return client;
  client = liveClient({
    onState: (state, detail) => {
      if (state === "closed" && liveWatched === "") setLive("off");
      else setLive(state, detail);
    },
    // With a cursor the subscription resumes where it was (the gateway replays what passed);
    // without one, what passed while the socket was down is unknown: read every row anew.
    onReconnected: () => {
      if (!livePayload?.variables.after) loadAll();
    },
  });
  return client;
}

function startLive() {
  const refs = board.rows.map((row) => row.ref);
  const watched = board.rows.map((row) => row.key).join(",");
  if (watched === liveWatched && stopSubscription) return;
  stopLive();
  liveWatched = watched;
  if (!refs.length) {
    setLive("off");
    return;
  }
  const payload = { query: CHANGED, variables: { refs, after: null } };
  livePayload = payload;
  stopSubscription = ensureClient().subscribe(payload, {
    next: (message) => {
      const change = message.data?.listingChanged;
      if (change) {
        payload.variables.after = change.cursor;
        $("live").dataset.cursor = change.cursor;
        applyChange(change);
        return;
      }
      const error = message.errors?.[0];
      if (error?.extensions?.reason === "cursor_expired") {
        // Gone from the gateway's log: read every row anew and follow from now on.
        payload.variables.after = null;
        liveWatched = "";
        stopSubscription = null;
        loadAll();
      } else if (error) {
        setLive("failed", error.message);
      }
    },
    error: (error) => {
      stopSubscription = null;
      const refused = error?.code === 4401 || error?.code === 4403;
      const detail = Array.isArray(error)
        ? error[0]?.message
        : refused
          ? "this gateway needs a valid client token"
          : error?.reason || error?.message || "closed";
      setLive("failed", detail);
      if (refused) askForToken();
    },
    complete: () => {
      if (livePayload === payload) stopSubscription = null;
    },
  });
}

function stopLive() {
  if (stopSubscription) stopSubscription();
  stopSubscription = null;
  liveWatched = "";
  livePayload = null;
}

function resetClient() {
  stopLive();
  if (client) client.dispose();
  client = null;
}

// ---- start -----------------------------------------------------------------------------

function refsFromPage() {
  const params = new URLSearchParams(window.location.search);
  const fromUrl = [...params.getAll("ref"), ...params.getAll("refs")];
  if (fromUrl.length) return parseRefs(fromUrl);
  const defaults = document.querySelector('meta[name="board-default-refs"]').content;
  return parseRefs([defaults]);
}

function setUp() {
  const filter = $("filter");
  for (const [state, info] of Object.entries(STATES)) {
    filter.append(new Option(`${info.symbol} ${info.label}`, state));
  }
  filter.append(new Option("? Unknown (an upstream failed)", "UNKNOWN"));
  filter.addEventListener("change", () => setFilter(filter.value));

  $("reload").addEventListener("click", () => loadAll());

  $("refs-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const { refs, invalid } = parseRefs([$("refs-input").value]);
    showNotice(invalid.length ? `Not a listing ref: ${invalid.join(", ")}` : "");
    const params = new URLSearchParams();
    for (const ref of refs) params.append("ref", formatRef(ref));
    window.history.replaceState(null, "", `?${params}${window.location.hash}`);
    showRefs(refs);
  });

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("token-input");
    setToken(input.value);
    input.value = "";
    $("token-form").hidden = true;
    showNotice("");
    resetClient();
    loadAll();
  });

  setInterval(() => refreshTimes(table), 30000);
}

takeTokenFromFragment();
setUp();
const { refs, invalid } = refsFromPage();
if (invalid.length) showNotice(`Not a listing ref: ${invalid.join(", ")}`);
showRefs(refs);
