// The JSON API, called from the page with the key the person gave (never in a URL or a log).
const KEY = "medrobotics.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const keys = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export async function get(path, params, { signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = keys.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  let res;
  try {
    res = await fetch(path + query(params), { headers, signal, credentials: "omit" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The service cannot be reached. Is the platform running?");
  }
  if (res.ok) return res.json();
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not the API's error body (a proxy's page): the status says enough
  }
  if (res.status === 503) {
    message = "The service is unavailable right now (503): the database may be down or busy. " +
      "Try again in a moment.";
  }
  throw new ApiError(res.status, message);
}
