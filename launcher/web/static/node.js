// The node page (node.html?name=DOMAIN): the node's state and counters, the
// kill / stop / start / restart / flush buttons (each enabled only when the
// launcher would do it), what waits in its queue, its latest events (live)
// and the SMTP transcript of its recent sessions. Everything a node or a
// mail said is shown as text only.
"use strict";

(() => {
  const { el, api } = mn;
  const name = (mn.param("name") || "").toLowerCase().replace(/\.$/, "");
  const enc = encodeURIComponent(name);
  const DOWN = ["stopped", "killed", "crashed", "failed"];
  const ACTIONS = ["kill", "stop", "start", "restart", "flush"];
  const MAX_EVENTS = 100;
  const REFRESH_MS = 1000;

  const errorBox = document.getElementById("error");
  const stateBadge = document.getElementById("state");
  const result = document.getElementById("action-result");
  let node = null;          // this node's entry of /api/v1/network
  let isResolver = name === "resolver";
  let pending = null;       // the action waiting for its reply
  const buttons = {};

  document.getElementById("title").textContent = "Node " + (name || "?");
  document.title = "mailnet · " + (name || "node");

  // ---- state and actions
  function applicable(action, state) {
    const down = DOWN.includes(state);
    switch (action) {
      case "kill": case "stop": return !down && state !== "stopping" && state !== "killing";
      case "start": return down;
      case "restart": return down || state === "ready";
      case "flush": return state === "ready" && !isResolver;
      default: return false;
    }
  }

  function showState(state) {
    stateBadge.textContent = state;
    stateBadge.className = "state " + state;
    for (const action of ACTIONS) {
      const ok = !pending && applicable(action, state);
      buttons[action].disabled = !ok;
    }
  }

  const FACTS = [["pid", "pid"], ["listen", "listen"], ["uptime_s", "uptime (s)"], ["restarts", "restarts"],
                 ["exit", "last exit"], ["tls", "STARTTLS"], ["tls_relay", "relay TLS"],
                 ["received", "received"], ["received_tls", "over TLS"], ["delivered", "delivered"],
                 ["relayed", "relayed"], ["queued", "queued"], ["bounced", "bounced"]];

  function showFacts() {
    const facts = FACTS.filter(([key]) => node[key] !== undefined && node[key] !== "" && !(key === "pid" && !node[key]))
      .map(([key, label]) => el("div", {}, el("dt", {}, label), el("dd", { "data-fact": key }, node[key])));
    // SPF, DKIM and DMARC verdicts on received mail (status "mail_auth"): the results seen, by count.
    if (node.mail_auth) {
      const words = (counts) => Object.entries(counts || {}).filter(([, n]) => n > 0)
        .map(([result, n]) => result + " " + n).join(" · ") || "none yet";
      for (const [key, label] of [["spf", "SPF"], ["dkim", "DKIM"], ["dmarc", "DMARC"]])
        facts.push(el("div", {}, el("dt", {}, label), el("dd", { "data-fact": key }, words(node.mail_auth[key]))));
      if (node.dmarc_policy)
        facts.push(el("div", {}, el("dt", {}, "policy.dmarc"), el("dd", { "data-fact": "dmarc_policy" }, node.dmarc_policy)));
    }
    document.getElementById("facts").replaceChildren(...facts);
  }

  async function loadNode() {
    const net = await api("/api/v1/network");
    const all = [net.resolver, ...(net.nodes || [])].filter(Boolean);
    const found = all.find((n) => n.name === name);
    if (!found) {
      const known = all.map((n) => n.name).join(", ");
      throw new Error("no node " + (name || "(no ?name=)") + " in network " + net.name + " (known: " + known + ")");
    }
    node = found;
    isResolver = found === net.resolver;
    showFacts();
    showState(node.state);
  }

  async function act(action) {
    if (pending) return;
    pending = action;
    showState(node ? node.state : "");
    result.className = "";
    result.textContent = action + ": waiting for the launcher…";
    errorBox.replaceChildren();
    try {
      const reply = await api("/api/v1/nodes/" + enc + "/" + action, { method: "POST", body: {} });
      // The reply says the new state: shown at once, the event stream confirms it.
      if (reply.state && node) node.state = reply.state;
      if (reply.pid !== undefined && node) node.pid = reply.pid;
      const told = Array.isArray(reply.flushed) ? " (told " + reply.flushed.join(", ") + ")" : "";
      result.textContent = action + ": done" + (reply.state ? ", " + name + " is " + reply.state : "") + told;
    } catch (error) {
      result.textContent = "";
      errorBox.replaceChildren(el("p", { class: "error" }, action + " refused: " + error.message));
    } finally {
      pending = null;
      if (node) { showFacts(); showState(node.state); }
      refreshSoon();
    }
  }

  function buildButtons() {
    const box = document.getElementById("actions");
    const titles = { kill: "SIGKILL: no goodbye, mail in flight stays queued at the sender",
                     stop: "A graceful stop (SIGTERM)", start: "Start the node again",
                     restart: "Stop and start", flush: "Retry the queued mail now" };
    for (const action of ACTIONS) {
      const b = el("button", { type: "button", "data-action": action, title: titles[action], disabled: true }, action);
      b.addEventListener("click", () => act(action));
      buttons[action] = b;
      box.append(b);
    }
  }

  // ---- the queue
  async function loadQueue() {
    const box = document.getElementById("queue");
    if (isResolver) {
      box.replaceChildren(el("p", { class: "muted" }, "The resolver holds no mail."));
      return;
    }
    const q = await api("/api/v1/nodes/" + enc + "/queue");
    if (!q.messages || q.messages.length === 0) {
      box.replaceChildren(el("p", { class: "muted", id: "queue-empty" }, "Nothing waits in the queue."));
      return;
    }
    const head = el("tr", {}, ["id", "from", "recipients", "attempts", "last error", "next try"]
      .map((h) => el("th", { scope: "col", class: h === "attempts" ? "num" : null }, h)));
    const body = q.messages.map((m) => el("tr", { "data-id": m.id },
      el("td", {}, m.id), el("td", {}, m.from ?? ""),
      el("td", {}, m.unreadable ? "unreadable: " + m.unreadable : (m.to || []).join(", ")),
      el("td", { class: "num" }, m.attempts ?? ""), el("td", { class: "error-text" }, m.last_error || ""),
      el("td", {}, m.next_try ? mn.formatTime(m.next_try) : "now")));
    box.replaceChildren(el("table", { "aria-labelledby": "queue-title" }, el("thead", {}, head), el("tbody", {}, body)));
  }

  // ---- the latest events, newest first
  const seen = [];
  let eventsBody = null;

  function fieldsText(ev) {
    return Object.entries(ev).filter(([k]) => !["time", "node", "event"].includes(k))
      .map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v))).join(" ");
  }

  function addEvent(ev) {
    if (!eventsBody) {
      eventsBody = el("tbody");
      const head = el("tr", {}, ["time", "event", "details"].map((h) => el("th", { scope: "col" }, h)));
      document.getElementById("events").replaceChildren(
        el("table", { "aria-labelledby": "events-title" }, el("thead", {}, head), eventsBody));
    }
    const row = el("tr", { class: ev.event === "state" ? "state-event" : null, "data-event": ev.event },
      el("td", { title: ev.time || "" }, mn.formatTime(ev.time)), el("td", {}, ev.event || ""),
      el("td", { class: "fields" }, fieldsText(ev)));
    eventsBody.prepend(row);
    seen.push(row);
    if (seen.length > MAX_EVENTS) seen.shift().remove();
  }

  function onEvent(ev) {
    if (ev.node !== name) return;
    addEvent(ev);
    if (ev.event === "state" && node) {
      node.state = ev.state;
      if (ev.exit) node.exit = ev.exit;
      showState(node.state);
    }
    refreshSoon();
  }

  // ---- the transcript (GET /api/v1/nodes/NAME/transcript)
  let transcriptMissing = false;
  let lastSessions = -Infinity;

  async function loadSessions() {
    const box = document.getElementById("sessions");
    if (isResolver) {
      box.replaceChildren(el("p", { class: "muted" }, "The resolver speaks no SMTP."));
      return;
    }
    if (transcriptMissing) return;
    let list;
    try {
      list = await api("/api/v1/nodes/" + enc + "/transcript");
    } catch (error) {
      if (error.status === 404) {
        transcriptMissing = true;
        box.replaceChildren(el("p", { class: "muted", id: "transcript-unavailable" },
          "The transcript is not available from this launcher (" + error.message + "). " +
          "It is in the run folder: " + name + "/smtp.log."));
        return;
      }
      throw error;
    }
    const sessions = list.sessions || [];
    if (sessions.length === 0) {
      box.replaceChildren(el("p", { class: "muted" }, "No SMTP session yet."));
      return;
    }
    const head = el("tr", {}, ["session", "first", "client", "HELO", "direction", "TLS", "lines"]
      .map((h) => el("th", { scope: "col", class: h === "lines" ? "num" : null }, h)));
    const rows = sessions.map((s) => {
      const open = el("button", { type: "button", "data-session": s.session, title: "Show this session's lines" },
                      s.session);
      open.addEventListener("click", () => showSession(s.session));
      const direction = s.direction === "inbound" && s.from_node ? "relay from " + s.from_node : s.direction || "";
      return el("tr", {}, el("td", {}, open), el("td", { title: s.first || "" }, mn.formatTime(s.first)),
        el("td", {}, s.client || ""), el("td", {}, s.helo || ""), el("td", {}, direction),
        el("td", { "data-tls": s.tls ? "yes" : "no" }, s.tls || "no"),
        el("td", { class: "num" }, s.lines ?? ""));
    });
    const note = list.cut ? el("p", { class: "muted" }, "Only the end of a long transcript is read.") : null;
    box.replaceChildren(el("table", { "aria-labelledby": "transcript-title" }, el("thead", {}, head),
      el("tbody", {}, rows)), note || "");
  }

  async function showSession(session) {
    const box = document.getElementById("session");
    try {
      const t = await api("/api/v1/nodes/" + enc + "/transcript?session=" + encodeURIComponent(session));
      // The switch to TLS is a rule across the transcript: what follows is encrypted.
      const lines = (t.lines || []).map((l) => l.tls_switch
        ? el("span", { class: "note tls-switch", "data-tls-switch": "" }, "── " + (l.text ?? "") + " ──\n")
        : el("span", { class: l.direction || "" },
          (l.direction === "client" ? "C: " : l.direction === "server" ? "S: " : "   ") + (l.text ?? "") + "\n"));
      box.replaceChildren(el("h3", {}, "Session " + session), el("pre", { tabindex: "0" }, lines));
    } catch (error) {
      mn.showError(box, error);
    }
  }

  // ---- keeping it current
  async function refresh() {
    try {
      await loadNode();
      await loadQueue();
      // The transcript means reading the end of smtp.log: not more than every 5 s.
      if (performance.now() - lastSessions >= 5000) {
        lastSessions = performance.now();
        await loadSessions();
      }
      errorBox.replaceChildren();
    } catch (error) {
      mn.showError(errorBox, error);
    }
  }

  const refresher = mn.throttled(refresh, REFRESH_MS, 100);
  const refreshSoon = () => refresher.soon();

  buildButtons();
  if (!name) {
    mn.showError(errorBox, new Error("no node named: open this page as node.html?name=DOMAIN"));
    return;
  }
  refresher.ran();
  refresh().then(() => mn.events(onEvent, { since: 0 }));
})();
