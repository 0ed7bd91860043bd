// The console's shell: hash routing (#/page/arg?query), the login page, navigation.

import { ApiError, clearToken, get, getToken, setToken, whenUnauthorized } from "./api.js";
import { announce, clear, h, leavePageStatus, put } from "./dom.js";
import { form } from "./forms.js";
import { chartsPage } from "./chart.js";
import { claimPage, claimsPage } from "./claims.js";
import { livePage } from "./live.js";
import { releasesPage } from "./releases.js";
import { rolloutPage, rolloutsPage } from "./rollouts.js";
import { dashboardsPage, thingPage } from "./operator.js";
import { alertsPage, fleetPage, logsPage } from "./ops.js";
import {
  deploymentPage,
  deploymentsPage,
  groupPage,
  groupsPage,
  overviewPage,
  thingsPage,
} from "./pages.js";

const PAGES = {
  overview: overviewPage,
  groups: (ctx) => (ctx.parts[1] ? groupPage(ctx) : groupsPage(ctx)),
  deployments: (ctx) => (ctx.parts[1] ? deploymentPage(ctx) : deploymentsPage(ctx)),
  rollouts: (ctx) => (ctx.parts[1] ? rolloutPage(ctx) : rolloutsPage(ctx)),
  things: (ctx) => (ctx.parts[1] ? thingPage(ctx) : thingsPage(ctx)),
  claims: (ctx) => (ctx.parts[1] ? claimPage(ctx) : claimsPage(ctx)),
  releases: releasesPage,
  dashboards: dashboardsPage,
  live: livePage,
  fleet: fleetPage,
  logs: logsPage,
  alerts: alertsPage,
  charts: chartsPage,
  login: loginPage,
};

let leaving = [];
let generation = 0;
// The first page keeps the focus at the top (the skip link comes first); later pages
// move it to their heading so keyboard and screen reader users start there.
let firstPage = true;
let loginReason = "";

function parseHash() {
  const raw = location.hash.slice(1) || "/overview";
  const [path, search] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts: parts.length ? parts : ["overview"], params: new URLSearchParams(search || "") };
}

function showChrome(loggedIn, page) {
  document.getElementById("nav").hidden = !loggedIn;
  document.getElementById("logout").hidden = !loggedIn;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route() {
  for (const fn of leaving.splice(0)) fn();
  generation += 1;
  const mine = generation;
  const first = firstPage;
  firstPage = false;
  const { parts, params } = parseHash();
  leavePageStatus(location.hash || "#/overview");
  const main = document.getElementById("main");
  if (!getToken() && parts[0] !== "login") {
    const next = location.hash || "#/overview";
    location.replace(`#/login?next=${encodeURIComponent(next)}`);
    return;
  }
  const name = PAGES[parts[0]] ? parts[0] : null;
  showChrome(Boolean(getToken()) && name !== "login", name);
  clear(main);
  const ctx = {
    main,
    parts,
    params,
    alive: () => mine === generation,
    onLeave: (fn) => leaving.push(fn),
    // Run fn now and every `ms` while this page is shown (skipped while the tab is hidden).
    every(ms, fn) {
      const timer = setInterval(() => {
        if (document.hidden || mine !== generation) return;
        // a refused token already sent the user to the login page: nothing more to say
        Promise.resolve(fn()).catch((exc) => {
          if (exc instanceof ApiError && (exc.status === 401 || mine !== generation)) return;
          throw exc;
        });
      }, ms);
      leaving.push(() => clearInterval(timer));
    },
  };
  if (!name) {
    put(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, `No page '${parts[0]}'.`));
  } else {
    try {
      await PAGES[name](ctx);
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      // refused (the 401 handler went to the login page) or left meanwhile: not shown
      if (exc.status === 401 || !ctx.alive()) return;
      clear(main);
      put(main,
        h("h1", { tabindex: "-1" }, "Something went wrong"),
        h("p", { class: "form-error", role: "alert" }, exc.message),
      );
    }
  }
  if (mine !== generation) return;
  const heading = main.querySelector("h1");
  if (heading && !first && !main.contains(document.activeElement)) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
  document.title = `${heading ? heading.textContent : "Hedgerow"} · Hedgerow console`;
}

async function loginPage(ctx) {
  const next = ctx.params.get("next") || "#/overview";
  const reason = loginReason;
  loginReason = "";
  const login = form({
    label: "Log in",
    submit: "Log in",
    defaultField: "token",
    fields: [
      {
        name: "token",
        label: "API token",
        type: "password",
        required: true,
        hint: "The admin token is in the cloud's data directory (admin-token).",
        attrs: { autocomplete: "current-password" },
      },
    ],
    validate: (v) => ({ token: v.token ? null : "enter the API token" }),
    onSubmit: async (v) => {
      try {
        await get("/api/v1/status", { token: v.token });
      } catch (exc) {
        if (exc instanceof ApiError && exc.status === 401) {
          throw new ApiError(401, `Wrong token: the cloud refused it (${exc.message}).`, "token");
        }
        throw exc;
      }
      setToken(v.token);
      const target = next.startsWith("#/login") ? "#/overview" : next;
      announce("Logged in.", "info", target.slice(2).split(/[/?]/)[0] || "overview");
      location.hash = target;
    },
  });
  put(ctx.main,
    h(
      "div",
      { class: "login" },
      h("h1", {}, "Log in to Hedgerow"),
      reason ? h("p", { class: "notice", role: "alert" }, reason) : null,
      login.element,
    ),
  );
  login.inputs.token.focus();
}

whenUnauthorized((message) => {
  const wasLoggedIn = Boolean(getToken());
  clearToken();
  if (wasLoggedIn) loginReason = `The cloud refused the token (${message}). Log in again.`;
  if (!location.hash.startsWith("#/login")) {
    location.hash = `#/login?next=${encodeURIComponent(location.hash || "#/overview")}`;
  }
});

document.getElementById("logout").addEventListener("click", () => {
  clearToken();
  announce("Logged out.", "info", "login");
  location.hash = "#/login";
});

window.addEventListener("hashchange", route);
route();
