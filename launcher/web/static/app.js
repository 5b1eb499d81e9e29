// mailnet dashboard: what every page shares. The page header (navigation, the
// large-type switch, the live-update indicator), calls to the API, the event
// stream, and a DOM builder that only ever sets text: mail and logs are
// untrusted, so no page puts their text into innerHTML.
"use strict";

const mn = (() => {
  const pages = [
    ["/", "Network"],
    ["/mail.html", "Mail"],
    ["/send.html", "Send"],
    ["/dns.html", "DNS"],
  ];

  // el("td", {class: "num", title: "x"}, "text", childNode, ...): attributes
  // and text only; on* attributes are refused so that no handler comes from data.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (/^on/i.test(name)) throw new Error("el: event handler attributes are not allowed: " + name);
      node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // The API: JSON in and out. A change is sent as JSON (the server refuses
  // anything else); an error reply throws an Error carrying the server's reason.
  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: {} };
    if (init.method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body || {});
    }
    const reply = await fetch(path, init);
    const type = reply.headers.get("Content-Type") || "";
    const data = type.startsWith("application/json") ? await reply.json() : await reply.text();
    if (!reply.ok) {
      const reason = data && data.error ? data.error : reply.status + " " + reply.statusText;
      const error = new Error(reason);
      error.status = reply.status;
      throw error;
    }
    return data;
  }

  let streamLive = null;  // the event stream's state, once a page opened it

  // The live event stream (/api/v1/events): calls onEvent with each node
  // event as an object; the browser reconnects by itself and resumes after
  // the last event it saw. The header's indicator shows whether it is live.
  // With options.since = N (0: all), the stream starts with the kept events
  // after id N, as with Last-Event-ID. With options.only = ["state", ...], the
  // launcher sends those events alone: a page that draws a few kinds of event
  // does not have every line of a loaded node sent, parsed and dropped.
  function events(onEvent, options = {}) {
    const query = new URLSearchParams();
    if (Number.isInteger(options.since)) query.set("since", String(options.since));
    if (options.only) query.set("events", options.only.join(","));
    const search = query.toString();
    const source = new EventSource("/api/v1/events" + (search ? "?" + search : ""));
    // Looked up when the state changes: a deferred page script calls this
    // before DOMContentLoaded has built the header.
    const show = (on) => {
      streamLive = on;
      const live = document.getElementById("live");
      if (live) { live.className = on ? "on" : "off"; live.textContent = on ? "live" : "reconnecting"; }
      else if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => show(on));
    };
    source.onopen = () => show(true);
    source.onerror = () => show(false);
    source.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      onEvent(event, message.lastEventId);
    };
    return source;
  }

  function setLarge(on) {
    document.documentElement.classList.toggle("large", on);
    try { localStorage.setItem("mailnet.large", on ? "1" : "0"); } catch { /* private mode */ }
    const button = document.getElementById("large-type");
    if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  // The header every page starts with; "L" toggles large type, "g" then a
  // page's first letter goes there (n, m, s, d), unless typing in a field.
  function header() {
    const here = location.pathname === "/index.html" ? "/" : location.pathname;
    const nav = el("nav", { "aria-label": "pages" },
      pages.map(([href, label]) => el("a", { href, "aria-current": href === here ? "page" : null }, label)));
    const large = el("button", { id: "large-type", type: "button", "aria-pressed": "false",
      title: "Large type for a projector (key L)" }, "Large type");
    large.addEventListener("click", () => setLarge(!document.documentElement.classList.contains("large")));
    const top = el("header", { class: "top" },
      el("a", { class: "skip", href: "#main" }, "Skip to content"),
      el("span", { class: "brand" }, "mailnet"), nav, el("span", { class: "spacer" }),
      el("span", { id: "live", class: streamLive ? "on" : "off", "aria-live": "polite" },
        streamLive === null ? "connecting" : streamLive ? "live" : "reconnecting"), large);
    document.body.prepend(top);
    let stored = null;
    try { stored = localStorage.getItem("mailnet.large"); } catch { /* private mode */ }
    setLarge(stored === "1");
    let pendingG = false;
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
      if (pendingG) {
        pendingG = false;
        const target = pages.find(([, label]) => label[0].toLowerCase() === e.key);
        if (target) location.href = target[0];
        return;
      }
      if (e.key === "g") pendingG = true;
      else if (e.key === "L") setLarge(!document.documentElement.classList.contains("large"));
    });
  }

  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString();
  }

  function param(name) { return new URLSearchParams(location.search).get(name); }

  function showError(container, error) {
    container.replaceChildren(el("p", { class: "error", role: "alert" }, String(error.message || error)));
  }

  document.addEventListener("DOMContentLoaded", header);
  // fn() at most once per everyMs while it is asked for again and again (events
  // coming fast), and never sooner than minMs after an ask: soon() asks,
  // ran() says fn has just run another way (the page's first load).
  function throttled(fn, everyMs, minMs) {
    let timer = null;
    let last = 0;
    return {
      soon() {
        if (timer) return;
        const wait = Math.max(minMs, everyMs - (performance.now() - last));
        timer = setTimeout(async () => {
          last = performance.now();
          await fn();
          timer = null;
        }, wait);
      },
      ran() { last = performance.now(); },
    };
  }

  return { el, api, events, formatTime, param, showError, throttled };
})();
