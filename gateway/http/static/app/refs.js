// Listing refs as the board writes them: a classifiedId, a legacy `userId:adId`, or both
// joined by `+` (a space works too, which is what `+` becomes in a URL's query string).

const LEGACY = /^(\d+):(\d+)$/;

export function parseRef(text) {
  const parts = text.trim().split(/[\s+]+/).filter(Boolean);
  if (parts.length === 0 || parts.length > 2) return null;
  const ref = {};
  for (const part of parts) {
    const legacy = LEGACY.exec(part);
    if (legacy) {
      if (ref.legacy) return null;
      ref.legacy = { userId: Number(legacy[1]), adId: Number(legacy[2]) };
    } else {
      if (ref.classifiedId) return null;
      ref.classifiedId = part;
    }
  }
  return ref;
}

export function formatRef(ref) {
  const parts = [];
  if (ref.classifiedId) parts.push(ref.classifiedId);
  if (ref.legacy) parts.push(`${ref.legacy.userId}:${ref.legacy.adId}`);
  return parts.join("+");
}

// Parses many refs (lines, commas); returns the refs and the pieces that were not refs.
export function parseRefs(texts) {
  const refs = [];
  const invalid = [];
  const seen = new Set();
  for (const text of texts.flatMap((t) => t.split(/[\n,]+/))) {
    if (!text.trim()) continue;
    const ref = parseRef(text);
    if (!ref) {
      invalid.push(text.trim());
      continue;
    }
    const key = formatRef(ref);
    if (!seen.has(key)) {
      seen.add(key);
      refs.push(ref);
    }
  }
  return { refs, invalid };
}
