// Runs graphql-http's GraphQL-over-HTTP server audits against the URL given as the first
// argument and prints one JSON array: {id, name, status: "ok" | "warn" | "error", reason}.
import { serverAudits } from "graphql-http";

const url = process.argv[2];
const results = [];
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  results.push({ id: audit.id, name: audit.name, status: result.status, reason: result.reason ?? null });
}
process.stdout.write(JSON.stringify(results));
