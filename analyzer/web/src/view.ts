// The current view's filters as API query parameters: one function, so every panel of a page
// asks the API exactly the same question (and the browser tests can ask it too).

import { qs } from "./api";
import { resolveWindow, type Window } from "./format";

export const FILTERS = ["tenant", "platform", "method", "os_version"] as const;

export interface View {
  params: URLSearchParams;
  win: Window;
  /** `?from=..&to=..&tenant=..&platform=..` plus `extra`. */
  q: (extra?: Record<string, string | number | null | undefined>) => string;
}

export function makeView(params: URLSearchParams, tick: number): View {
  // `tick` is read so a refresh recomputes a rolling window.
  void tick;
  const win = resolveWindow(params);
  const base: Record<string, string | null> = { from: win.from, to: win.to };
  for (const f of FILTERS) base[f] = params.get(f);
  return { params, win, q: (extra = {}) => qs({ ...base, ...extra }) };
}
