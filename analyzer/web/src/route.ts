// Hash routes (contract shared with alert links): `#/overview?tenant=T&from=ISO&to=ISO`,
// `#/category/<c>?...`, `#/code/<code>?...`, `#/device/<id>?tenant=..`, `#/insights`,
// `#/alerts`. Everything a view shows is in its URL, so a link reproduces the view.

import { useEffect, useState } from "preact/hooks";

export type Page = "overview" | "category" | "code" | "device" | "insights" | "alerts";

export interface Route {
  page: Page;
  arg: string;
  params: URLSearchParams;
}

const PAGES: Page[] = ["overview", "category", "code", "device", "insights", "alerts"];

export function parseHash(hash: string): Route {
  const body = hash.replace(/^#\/?/, "");
  const [path, query = ""] = body.split("?", 2);
  const [first, ...rest] = path.split("/");
  const page = (PAGES as string[]).includes(first) ? (first as Page) : "overview";
  return { page, arg: decodeURIComponent(rest.join("/")), params: new URLSearchParams(query) };
}

export function href(page: Page, arg: string | null, params: URLSearchParams | Record<string, string | null | undefined>): string {
  const p = params instanceof URLSearchParams ? new URLSearchParams(params) : new URLSearchParams();
  if (!(params instanceof URLSearchParams)) {
    for (const [k, v] of Object.entries(params)) if (v != null && v !== "") p.set(k, v);
  }
  const q = p.toString();
  return `#/${page}${arg != null ? "/" + encodeURIComponent(arg) : ""}${q ? "?" + q : ""}`;
}

/** The view parameters that carry over from page to page (time range, tenant, filters). */
export const SHARED_PARAMS = ["tenant", "from", "to", "range", "bucket", "platform", "method", "os_version"];

export function carry(params: URLSearchParams, extra: Record<string, string | null> = {}): URLSearchParams {
  const p = new URLSearchParams();
  for (const k of SHARED_PARAMS) {
    const v = params.get(k);
    if (v) p.set(k, v);
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v == null || v === "") p.delete(k);
    else p.set(k, v);
  }
  return p;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(window.location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

export function navigate(to: string, replace = false): void {
  if (replace) {
    history.replaceState(null, "", to);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    window.location.hash = to.replace(/^#/, "");
  }
}
