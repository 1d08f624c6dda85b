// Rendering of the board: rows, chips, the per-state bar chart. Plain DOM, no framework.
// Every state has a word and a symbol besides its colour, so colour is never the only cue.

export const STATES = {
  FAILED: { label: "Failed", symbol: "✕" },
  ONLINE: { label: "Online", symbol: "●" },
  PROCESSING: { label: "Processing", symbol: "◐" },
  PENDING: { label: "Pending", symbol: "◔" },
  DELETING: { label: "Deleting", symbol: "⊖" },
  OFFLINE: { label: "Offline", symbol: "○" },
  DELETED: { label: "Deleted", symbol: "⊘" },
  NOT_PUBLISHED: { label: "Not published", symbol: "–" },
};
export const UNKNOWN = { label: "Unknown", symbol: "?" };

export const PROVIDERS = [
  { id: "CLASSIFIEDS_V3", label: "Classifieds V3", upstream: "classifieds-v3",
    portals: ["SL", "BU", "COM", "BD", "LR", "LI", "SLC", "SLN"] },
  { id: "LEGACY", label: "Legacy", upstream: "legacy",
    portals: ["MARKTPLAATS", "TWEEDEHANDS", "WEBSITE"] },
];

const PORTAL_LABELS = { MARKTPLAATS: "Marktplaats", TWEEDEHANDS: "2dehands", WEBSITE: "Website" };
const UPSTREAM_LABELS = { "classifieds-v3": "V3", legacy: "legacy" };
const CODE_WORDS = {
  UPSTREAM_UNAVAILABLE: "unavailable",
  UPSTREAM_REJECTED: "rejected the request",
  NOT_FOUND: "not found",
  UNAUTHENTICATED: "needs a token",
  BAD_USER_INPUT: "bad ref",
};

export function portalLabel(portal) {
  return PORTAL_LABELS[portal] ?? portal;
}

export function stateInfo(state) {
  return STATES[state] ?? UNKNOWN;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const UNITS = [
  ["y", 365 * 24 * 3600],
  ["mo", 30 * 24 * 3600],
  ["d", 24 * 3600],
  ["h", 3600],
  ["min", 60],
  ["s", 1],
];

// "3 min": short enough for a chip.
export function duration(seconds) {
  const value = Math.max(0, seconds);
  for (const [unit, size] of UNITS) {
    if (value >= size || unit === "s") return `${Math.floor(value / size)} ${unit}`;
  }
  return "";
}

// "3 min ago"; the exact date is in the element's title.
export function ago(iso, now = Date.now()) {
  return `${duration((now - new Date(iso).getTime()) / 1000)} ago`;
}

export function sinceElement(iso) {
  if (!iso) return el("span", { class: "since", text: "no date" });
  return el("time", {
    class: "since",
    datetime: iso,
    title: new Date(iso).toLocaleString(),
    text: ago(iso),
  });
}

// Refreshes every "… ago" on the page (they drift while the page stays open).
export function refreshTimes(root) {
  for (const time of root.querySelectorAll("time.since")) {
    time.textContent = ago(time.getAttribute("datetime"));
  }
}

let tipCounter = 0;

export function chip(cell) {
  const info = stateInfo(cell.state);
  const tipId = `tip-${++tipCounter}`;
  const node = el(
    "span",
    {
      class: `chip state-${cell.state ?? "UNKNOWN"}${cell.actionRequired ? " action" : ""}`,
      tabindex: 0,
      "data-state": cell.state ?? "UNKNOWN",
      "data-action-required": cell.actionRequired ? "true" : null,
      "aria-describedby": cell.message ? tipId : null,
    },
    el("span", { class: "symbol", "aria-hidden": "true", text: info.symbol }),
    el("span", { class: "label", text: info.label }),
    cell.actionRequired ? el("span", { class: "flag", text: "⚠ action" }) : null,
    cell.since ? sinceElement(cell.since) : null,
  );
  if (cell.message) node.append(el("span", { class: "tip", role: "tooltip", id: tipId, text: cell.message }));
  return node;
}

export function missingChip(text, detail) {
  return el(
    "span",
    { class: "chip state-UNKNOWN missing", tabindex: 0, "data-state": "UNAVAILABLE" },
    el("span", { class: "symbol", "aria-hidden": "true", text: "?" }),
    el("span", { class: "label", text }),
    detail ? el("span", { class: "tip", role: "tooltip", text: detail }) : null,
  );
}

export function headerRows(portalsOf) {
  const top = el("tr", {}, el("th", { rowspan: 2, scope: "col", text: "Listing" }),
    el("th", { rowspan: 2, scope: "col", text: "Overall" }));
  const bottom = el("tr");
  for (const provider of PROVIDERS) {
    const portals = portalsOf(provider.id);
    top.append(el("th", { colspan: portals.length, scope: "colgroup", class: "provider", text: provider.label }));
    for (const portal of portals) bottom.append(el("th", { scope: "col", text: portalLabel(portal) }));
  }
  return [top, bottom];
}

export function describeError(error) {
  const upstream = UPSTREAM_LABELS[error.upstream] ?? error.upstream ?? "gateway";
  const words = CODE_WORDS[error.code] ?? "error";
  return `${upstream} ${words}`;
}

function refCell(row) {
  const lines = [];
  if (row.ref.classifiedId) {
    lines.push(el("span", { class: "ref-id", title: row.ref.classifiedId, text: row.ref.classifiedId }));
  }
  if (row.ref.legacy) {
    lines.push(el("span", { class: "ref-legacy", text: `legacy ${row.ref.legacy.userId}:${row.ref.legacy.adId}` }));
  }
  const cell = el("th", { scope: "row", class: "ref" }, ...lines);
  if (row.stale) {
    const age = row.stale.age === null ? "" : ` (${duration(row.stale.age)} old)`;
    cell.append(el("span", {
      class: "badge stale",
      "data-stale": "true",
      text: `⏱ stale answer${age}`,
      title: "V3 was unavailable: these V3 states come from a cached answer past its freshness",
    }));
  }
  if (row.errors.length) {
    const list = el("ul", { class: "errors" });
    for (const error of row.errors) {
      list.append(el("li", { title: error.message },
        el("span", { "aria-hidden": "true", text: "⚠ " }),
        `${describeError(error)} `,
        el("code", { text: error.code ?? "ERROR" })));
    }
    cell.append(list);
  }
  return cell;
}

export function rowElement(row, portalsOf) {
  const tr = el("tr", {
    "data-ref": row.key,
    "data-classified-id": row.ref.classifiedId ?? null,
    "data-state": row.state ?? "UNKNOWN",
  });
  tr.append(refCell(row));
  const overall = row.loading
    ? missingChip("Loading…")
    : row.state
      ? chip({ state: row.state, actionRequired: row.actionRequired })
      : missingChip("Unknown", row.errors.map((e) => e.message).join("; "));
  tr.append(el("td", { class: "overall", "data-label": "Overall" }, overall));
  for (const provider of PROVIDERS) {
    const sourceError = row.errors.find((e) => e.provider === provider.id);
    const known = provider.id === "CLASSIFIEDS_V3" ? row.ref.classifiedId : row.ref.legacy;
    for (const portal of portalsOf(provider.id)) {
      const cell = row.cells.get(portal);
      let content;
      if (cell) content = chip(cell);
      else if (row.loading) content = el("span", { class: "none", text: "…" });
      else if (sourceError) content = missingChip("unavailable", `${describeError(sourceError)}: ${sourceError.message}`);
      else if (!known) content = el("span", { class: "none", text: "—", title: "no ref for this provider" });
      else content = el("span", { class: "none", text: "—", title: "not on this portal" });
      const empty = content.classList.contains("none");
      tr.append(el("td", {
        class: empty ? "empty" : null,
        "data-label": portalLabel(portal),
        "data-portal": portal,
        "data-provider": provider.id,
      }, content));
    }
  }
  return tr;
}

export function renderBars(list, counts, filter, onPick) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0) || 1;
  list.replaceChildren();
  const entries = [...Object.keys(STATES), "UNKNOWN"].filter((s) => counts[s]);
  for (const state of entries) {
    const info = stateInfo(state);
    const count = counts[state];
    const button = el(
      "button",
      {
        type: "button",
        class: `bar state-${state}`,
        "aria-pressed": filter === state ? "true" : "false",
        "data-state": state,
        title: `Show only ${info.label.toLowerCase()} listings`,
      },
      el("span", { class: "bar-label" },
        el("span", { "aria-hidden": "true", text: `${info.symbol} ` }), info.label),
      el("span", { class: "bar-track", "aria-hidden": "true" },
        el("span", { class: "bar-fill", style: `width: ${(100 * count) / total}%` })),
      el("span", { class: "bar-count", text: String(count) }),
    );
    button.addEventListener("click", () => onPick(filter === state ? "" : state));
    list.append(el("li", {}, button));
  }
}
