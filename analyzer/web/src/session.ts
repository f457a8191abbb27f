// The API key lives in sessionStorage: it survives reloads of this tab, dies with the tab, and
// is never put in a URL the server sees (the `#key=` fragment is read here and removed).

const KEY = "fleetpulse.apiKey";

export function storedKey(): string | null {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function storeKey(key: string): void {
  sessionStorage.setItem(KEY, key.trim());
}

export function clearKey(): void {
  sessionStorage.removeItem(KEY);
}

/** Signs in from `#key=fpk_...` (a link printed by scripts/run.sh) and drops the key from
 *  the address bar and the history entry. */
export function takeKeyFromFragment(): boolean {
  const m = /^#key=([^&]+)/.exec(window.location.hash);
  if (!m) return false;
  storeKey(decodeURIComponent(m[1]));
  history.replaceState(null, "", `${window.location.pathname}#/overview`);
  return true;
}

export type Theme = "light" | "dark";

export function initialTheme(): Theme {
  const saved = localStorage.getItem("fleetpulse.theme");
  if (saved === "light" || saved === "dark") return saved;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function applyTheme(t: Theme): void {
  document.documentElement.dataset.theme = t;
  localStorage.setItem("fleetpulse.theme", t);
}
