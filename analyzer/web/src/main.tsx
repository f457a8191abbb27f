import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { ApiContext, makeFetcher, qs, type BreakdownResp, type Features, type WhoAmI } from "./api";
import { BUCKETS, RANGES, label, resolveWindow } from "./format";
import { Alerts } from "./pages/alerts";
import { Device } from "./pages/device";
import { Drill } from "./pages/drill";
import { Insights } from "./pages/insights";
import { Overview } from "./pages/overview";
import { SignIn } from "./pages/signin";
import { carry, href, navigate, useRoute, type Page, type Route } from "./route";
import { applyTheme, clearKey, initialTheme, storedKey, storeKey, takeKeyFromFragment, type Theme } from "./session";
import { Logo } from "./ui";
import "./styles.css";

const REFRESH_MS = 60_000;

function App() {
  const [key, setKey] = useState<string | null>(() => {
    takeKeyFromFragment();
    return storedKey();
  });
  const [who, setWho] = useState<WhoAmI | null>(null);
  const [signInError, setSignInError] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);
  const [theme, setTheme] = useState<Theme>(initialTheme);
  // A `#key=` link opened in a tab that already shows the dashboard only changes the hash.
  useEffect(() => {
    const on = () => {
      if (takeKeyFromFragment()) {
        setWho(null);
        setSignInError(null);
        setKey(storedKey());
        setAttempt((a) => a + 1);
      }
    };
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  useEffect(() => applyTheme(theme), [theme]);

  const signOut = (reason: string | null) => {
    clearKey();
    setKey(null);
    setWho(null);
    setSignInError(reason);
  };
  const get = useMemo(() => makeFetcher(key ?? "", (reason) => signOut(`The analyzer refused this API key: ${reason}.`)), [key]);

  // Validate the key (also tells whether it reads every tenant) before showing anything.
  useEffect(() => {
    if (!key) return;
    get<WhoAmI>("/api/v1/whoami").then(setWho, (e) => {
      if (e.status !== 401) setSignInError(`Cannot sign in: ${e.message}`);
    });
  }, [key, attempt]);

  if (!key || !who) {
    return (
      <SignIn
        error={signInError}
        busy={!!key && !who && !signInError}
        theme={theme}
        onTheme={setTheme}
        onSubmit={(k) => {
          setSignInError(null);
          storeKey(k);
          setKey(k.trim());
          setAttempt((a) => a + 1);
        }}
      />
    );
  }
  return <Shell get={get} who={who} theme={theme} onTheme={setTheme} onSignOut={() => signOut(null)} />;
}

function Shell(props: { get: ReturnType<typeof makeFetcher>; who: WhoAmI; theme: Theme; onTheme: (t: Theme) => void; onSignOut: () => void }) {
  const route = useRoute();
  const [tick, setTick] = useState(0);
  const [auto, setAuto] = useState(() => localStorage.getItem("fleetpulse.autoRefresh") !== "off");
  const [features, setFeatures] = useState<Features>({ alerts: false });
  const win = resolveWindow(route.params);

  // Optional features are discovered from the public OpenAPI document, never by probing.
  useEffect(() => {
    fetch("/api/v1/openapi.json")
      .then((r) => r.json())
      .then((doc) => setFeatures({ alerts: !!doc?.paths?.["/api/v1/alerts"] }))
      .catch(() => setFeatures({ alerts: false }));
  }, []);

  useEffect(() => {
    localStorage.setItem("fleetpulse.autoRefresh", auto ? "on" : "off");
    if (!auto || win.fixed) return;
    const t = setInterval(() => {
      if (document.visibilityState === "visible") setTick((x) => x + 1);
    }, REFRESH_MS);
    return () => clearInterval(t);
  }, [auto, win.fixed]);

  useEffect(() => {
    const titles: Record<Page, string> = {
      overview: "Overview",
      category: label(route.arg),
      code: route.arg,
      device: route.arg,
      insights: "Insights",
      alerts: "Alerts",
    };
    document.title = `${titles[route.page]} · Fleetpulse`;
  }, [route.page, route.arg]);

  const ctx = useMemo(() => ({ get: props.get, tick, features, refresh: () => setTick((x) => x + 1) }), [props.get, tick, features]);
  return (
    <ApiContext.Provider value={ctx}>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href("overview", null, carry(route.params))} aria-label="Fleetpulse overview">
          <Logo /> Fleetpulse
        </a>
        <nav aria-label="Pages">
          {(["overview", "insights", "alerts"] as Page[]).map((p) => (
            <a key={p} href={href(p, null, carry(route.params))} aria-current={route.page === p ? "page" : undefined}>
              {label(p)}
            </a>
          ))}
        </nav>
        <div class="top-right">
          <TenantSwitch route={route} who={props.who} />
          <button type="button" class="icon" onClick={() => props.onTheme(props.theme === "dark" ? "light" : "dark")} aria-label={`Switch to ${props.theme === "dark" ? "light" : "dark"} theme`}>
            {props.theme === "dark" ? "☀" : "☾"}
          </button>
          <button type="button" class="ghost" onClick={props.onSignOut} data-testid="sign-out">
            Sign out
          </button>
        </div>
      </header>
      {route.page !== "insights" && route.page !== "device" && route.page !== "alerts" && <Toolbar route={route} auto={auto} setAuto={setAuto} onRefresh={() => setTick((x) => x + 1)} />}
      <main id="main" tabIndex={-1} data-page={route.page} data-from={win.from} data-to={win.to} data-bucket={win.bucket}>
        {route.page === "overview" && <Overview route={route} theme={props.theme} />}
        {route.page === "category" && <Drill key={`c-${route.arg}`} route={route} theme={props.theme} kind="category" />}
        {route.page === "code" && <Drill key={`k-${route.arg}`} route={route} theme={props.theme} kind="code" />}
        {route.page === "device" && <Device key={route.arg} route={route} />}
        {route.page === "insights" && <Insights route={route} />}
        {route.page === "alerts" && <Alerts route={route} />}
      </main>
      <footer class="foot">
        Signed in with key <span class="mono">{props.who.key_id}</span> ({props.who.tenant ? `tenant ${props.who.tenant}` : "all tenants"}) ·{" "}
        <a href="/api/v1/openapi.json">API</a>
      </footer>
    </ApiContext.Provider>
  );
}

function setParams(route: Route, changes: Record<string, string | null>) {
  const p = new URLSearchParams(route.params);
  for (const [k, v] of Object.entries(changes)) {
    if (v == null || v === "") p.delete(k);
    else p.set(k, v);
  }
  navigate(href(route.page, route.arg || null, p));
}

function TenantSwitch(props: { route: Route; who: WhoAmI }) {
  const { route, who } = props;
  const [tenants, setTenants] = useState<string[]>([]);
  const get = useMemo(() => makeFetcher(storedKey() ?? "", () => {}), []);
  const win = resolveWindow(new URLSearchParams({ range: "90d" }));
  useEffect(() => {
    if (who.tenant) return;
    get<BreakdownResp>(`/api/v1/breakdown/tenant${qs({ from: win.from, to: win.to, limit: 500 })}`).then(
      (d) => setTenants(d.rows.map((r) => r.key ?? "").filter(Boolean).sort()),
      () => setTenants([]),
    );
  }, [who.tenant]);
  if (who.tenant) {
    return (
      <span class="tenant-fixed" data-testid="tenant-fixed">
        Tenant <strong>{who.tenant}</strong>
      </span>
    );
  }
  const current = route.params.get("tenant") ?? "";
  return (
    <label class="inline">
      <span class="sr-only">Tenant</span>
      <select data-testid="tenant-switch" value={current} onChange={(e) => setParams(route, { tenant: (e.target as HTMLSelectElement).value || null })}>
        <option value="">All tenants</option>
        {[...new Set([...tenants, ...(current ? [current] : [])])].map((t) => (
          <option key={t} value={t}>
            {t}
          </option>
        ))}
      </select>
    </label>
  );
}

function Toolbar(props: { route: Route; auto: boolean; setAuto: (b: boolean) => void; onRefresh: () => void }) {
  const { route } = props;
  const win = resolveWindow(route.params);
  const rangeId = win.fixed ? "custom" : (route.params.get("range") ?? "7d");
  const filters = (["platform", "method", "os_version"] as const).filter((f) => route.params.get(f));
  return (
    <div class="toolbar" role="region" aria-label="Time range and filters">
      <label class="inline">
        Range{" "}
        <select
          data-testid="range"
          value={rangeId}
          onChange={(e) => {
            const v = (e.target as HTMLSelectElement).value;
            if (v !== "custom") setParams(route, { range: v, from: null, to: null, bucket: null });
          }}
        >
          {RANGES.map((r) => (
            <option key={r.id} value={r.id}>
              {r.label}
            </option>
          ))}
          {win.fixed && <option value="custom">{`${win.from.slice(0, 16).replace("T", " ")} → ${win.to.slice(0, 16).replace("T", " ")} UTC`}</option>}
        </select>
      </label>
      <label class="inline">
        Bucket{" "}
        <select data-testid="bucket" value={win.bucket} onChange={(e) => setParams(route, { bucket: (e.target as HTMLSelectElement).value })}>
          {BUCKETS.map((b) => (
            <option key={b} value={b}>
              {b}
            </option>
          ))}
        </select>
      </label>
      {filters.map((f) => (
        <button key={f} type="button" class="chip" onClick={() => setParams(route, { [f]: null })} aria-label={`Remove filter ${label(f)} = ${label(route.params.get(f))}`} data-testid={`chip-${f}`}>
          {label(f)}: {label(route.params.get(f))} <span aria-hidden="true">×</span>
        </button>
      ))}
      <span class="spacer" />
      <label class="inline check">
        <input type="checkbox" checked={props.auto && !win.fixed} disabled={win.fixed} onChange={(e) => props.setAuto((e.target as HTMLInputElement).checked)} /> Auto-refresh (1 min)
      </label>
      <button type="button" class="ghost" onClick={props.onRefresh}>
        Refresh
      </button>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
