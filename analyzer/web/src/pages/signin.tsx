import { useState } from "preact/hooks";
import { Logo } from "../ui";
import type { Theme } from "../session";

export function SignIn(props: { error: string | null; busy: boolean; theme: Theme; onTheme: (t: Theme) => void; onSubmit: (key: string) => void }) {
  const [key, setKey] = useState("");
  return (
    <main class="signin" id="main">
      <form
        class="signin-card"
        onSubmit={(e) => {
          e.preventDefault();
          if (key.trim()) props.onSubmit(key);
        }}
        aria-labelledby="signin-title"
      >
        <div class="brand big">
          <Logo /> Fleetpulse
        </div>
        <h1 id="signin-title">Sign in to the fleet dashboard</h1>
        <p class="muted">
          Use an analyzer API key (<span class="mono">fpk_…</span>), created with <span class="mono">fleetpulse-analyzer key create</span>. It stays in this browser tab
          and is sent only to this analyzer.
        </p>
        <label for="api-key">API key</label>
        <input id="api-key" name="api-key" type="password" autocomplete="off" spellcheck={false} placeholder="fpk_…" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} required />
        {props.error && (
          <div class="error" role="alert" data-testid="signin-error">
            {props.error}
          </div>
        )}
        <button type="submit" class="primary" disabled={props.busy}>
          {props.busy ? "Signing in…" : "Sign in"}
        </button>
        <button type="button" class="ghost small" onClick={() => props.onTheme(props.theme === "dark" ? "light" : "dark")}>
          {props.theme === "dark" ? "Light" : "Dark"} theme
        </button>
      </form>
    </main>
  );
}
