// The gateway's web console: one page, hash-routed. Who the caller is comes
// from GET /meshguard/v1/whoami (the tailnet says it; there is no login).
import { render } from "preact";
import { html } from "./lib/html.js";
import { href, useRoute } from "./lib/route.js";
import { Loading, Problem, useApi } from "./lib/ui.js";
import { ChatPage } from "./pages/chat.js";
import { ConnectPage } from "./pages/connect.js";
import { ConnectionsPage } from "./pages/connections.js";
import { LogsPage } from "./pages/logs.js";
import { QuotasPage } from "./pages/quotas.js";
import { RequestPage } from "./pages/request.js";
import { SessionsPage } from "./pages/sessions.js";
import { UsagePage } from "./pages/usage.js";

const PAGES = [
  { page: "logs", title: "Logs" },
  { page: "sessions", title: "Sessions" },
  { page: "usage", title: "Usage" },
  { page: "quotas", title: "Quotas", admin: true },
  { page: "chat", title: "Chat" },
  { page: "connections", title: "Connections" },
  { page: "connect", title: "Connect a client" },
];

function Page({ route, me }) {
  const { page, args, query } = route;
  switch (page) {
    case "logs":
      return args[0] ? html`<${RequestPage} id=${args[0]} />` : html`<${LogsPage} query=${query} me=${me} key=${JSON.stringify(query)} />`;
    case "sessions":
      return html`<${SessionsPage} query=${query} me=${me} />`;
    case "usage":
      return html`<${UsagePage} query=${query} me=${me} />`;
    case "quotas":
      return html`<${QuotasPage} />`;
    case "chat":
      return html`<${ChatPage} />`;
    case "connections":
      return html`<${ConnectionsPage} me=${me} />`;
    case "connect":
      return html`<${ConnectPage} me=${me} />`;
    default:
      return html`<section><h1>Not found</h1><p>No console page ${page}. <a href=${href("logs")}>Logs</a></p></section>`;
  }
}

function App() {
  const route = useRoute();
  const who = useApi("/whoami", undefined, "whoami");
  if (route.page === "") location.replace(href("logs"));
  const me = who.data;
  return html`<header>
      <a class="brand" href=${href("logs")}>meshguard <span>gateway</span></a>
      <nav>${PAGES.map((p) => html`<a href=${href(p.page)} class=${route.page === p.page ? "active" : ""} data-page=${p.page}>${p.title}${p.admin ? html` <small class="tag">admin</small>` : null}</a>`)}</nav>
      ${me ? html`<div class="me" data-testid="me" title=${`node ${me.node}${me.tags.length ? ` (${me.tags.join(", ")})` : ""}, via ${me.via} from ${me.addr}`}>${me.user || me.node} · <b>${me.role}</b></div>` : null}
    </header>
    <main>${who.error ? html`<${Problem} error=${who.error} what="who you are" />` : !me ? html`<${Loading} />` : html`<${Page} route=${route} me=${me} />`}</main>`;
}

// The placeholder shown while the modules load is replaced, not kept beside the app.
const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
