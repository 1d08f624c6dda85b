// The client token, kept in this page's memory only: read once from the URL fragment
// (`#token=…`), which is then removed from the address bar and history, or typed into a prompt.
// It is never written to storage, the URL or the console.

let token = null;

export function takeTokenFromFragment() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const value = params.get("token");
  if (value) {
    token = value;
    params.delete("token");
    const rest = params.toString();
    const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : "");
    window.history.replaceState(null, "", url);
  }
  return token !== null;
}

export function setToken(value) {
  token = value ? value.trim() : null;
}

export function hasToken() {
  return token !== null;
}

export function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function connectionParams() {
  return token ? { authorization: `Bearer ${token}` } : {};
}
