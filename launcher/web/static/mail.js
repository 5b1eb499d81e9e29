// The mail page: every domain and user with their unread counts, and the
// delivered messages (newest first), filtered by mailbox and searched; kept
// live from the event stream: a delivery refreshes the list, no reload.
// Unread is the Maildir's: a message in new/, or in cur/ without the S flag.
"use strict";

(() => {
  const { el, api } = mn;
  const boxes = document.getElementById("mailboxes");
  const list = document.getElementById("list");
  const count = document.getElementById("count");
  const search = document.getElementById("search");
  const LIMIT = 200;

  // What is shown: a mailbox (domain, user; empty for all) and a search;
  // kept in the address so that a reload or a link shows the same.
  const state = { domain: mn.param("domain") || "", user: mn.param("user") || "", q: mn.param("q") || "" };
  search.value = state.q;

  function remember() {
    const p = new URLSearchParams();
    for (const k of ["domain", "user", "q"]) if (state[k]) p.set(k, state[k]);
    const query = p.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
  }

  function choose(domain, user) {
    state.domain = domain;
    state.user = user;
    remember();
    refresh();
  }

  function unreadBadge(n) {
    return n ? el("span", { class: "unread-count", title: n + " unread" }, String(n)) : null;
  }

  function boxButton(label, domain, user, counts) {
    const current = state.domain === domain && state.user === user;
    const button = el("button", { type: "button", class: "box", "aria-pressed": current ? "true" : "false",
      "data-domain": domain, "data-user": user,
      title: `${counts.total} message${counts.total === 1 ? "" : "s"}, ${counts.unread} unread` },
    el("span", { class: "box-name" }, label), unreadBadge(counts.unread));
    button.addEventListener("click", () => choose(domain, user));
    return button;
  }

  function drawMailboxes(doc) {
    const all = { total: 0, unread: 0 };
    for (const d of doc.domains) { all.total += d.total; all.unread += d.unread; }
    const tree = el("ul", { class: "tree" }, el("li", {}, boxButton("All mail", "", "", all)),
      doc.domains.map((d) => el("li", { "data-domain": d.domain },
        boxButton(d.domain, d.domain, "", d),
        el("ul", {}, d.users.map((u) => el("li", {}, boxButton(u.user, d.domain, u.user, u)))))));
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest(".box");
    const key = focused ? [focused.dataset.domain, focused.dataset.user] : null;
    boxes.replaceChildren(el("h2", {}, "Mailboxes"), tree);
    if (key) {  // keep the keyboard where it was across a live refresh
      const again = [...boxes.querySelectorAll(".box")].find((b) => b.dataset.domain === key[0] && b.dataset.user === key[1]);
      if (again) again.focus();
    }
  }

  function messageRow(m) {
    const link = el("a", { href: "/message.html?id=" + encodeURIComponent(m.id) }, m.subject || "(no subject)");
    const junk = m.folder === "Junk";  // the DMARC quarantine, <user>/.Junk
    return el("tr", { class: [m.unread ? "unread" : "", m.bounce ? "bounce" : "", junk ? "junk" : ""].join(" ").trim() || null,
      "data-id": m.id },
    el("td", { class: "flags" },
      m.unread ? el("span", { class: "dot", title: "unread" }, "●") : null,
      m.bounce ? el("span", { class: "badge bounce", title: "a delivery status notification (bounce)" }, "bounce") : null,
      junk ? el("span", { class: "badge junk", title: "quarantined: it failed DMARC under the sender's p=quarantine" }, "Junk") : null),
    el("td", {}, m.user + "@" + m.domain + (junk ? " (Junk)" : "")),
    el("td", {}, m.from),
    el("td", { class: "subject" }, link,
      m.attachments.length ? el("span", { class: "clip", title: m.attachments.join(", ") },
        " 📎 " + m.attachments.length) : null),
    el("td", { class: "date" }, m.date),
    el("td", { class: "num" }, formatSize(m.size)));
  }

  function formatSize(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  function drawList(doc) {
    const where = state.user ? `${state.user}@${state.domain}` : state.domain || "every mailbox";
    document.getElementById("title").textContent = "Mail · " + where;
    count.textContent = doc.total === doc.count
      ? `${doc.total} message${doc.total === 1 ? "" : "s"}${state.q ? ` matching “${state.q}”` : ""}`
      : `the newest ${doc.count} of ${doc.total} messages${state.q ? ` matching “${state.q}”` : ""}`;
    if (!doc.messages.length) {
      list.replaceChildren(el("p", { class: "muted empty" }, state.q ? "Nothing matches." : "No mail here yet."));
      return;
    }
    const head = el("tr", {}, ["", "mailbox", "from", "subject", "date", "size"]
      .map((h, i) => el("th", { scope: "col", class: i === 5 ? "num" : null }, h)));
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("tr[data-id]");
    const keep = focused ? focused.dataset.id : null;
    list.replaceChildren(el("table", { class: "mail-list" }, el("thead", {}, head),
      el("tbody", {}, doc.messages.map(messageRow))));
    if (keep) {  // keep the keyboard on the message it was on
      const row = [...list.querySelectorAll("tr[data-id]")].find((r) => r.dataset.id === keep);
      if (row) row.querySelector("a").focus();
    }
  }

  // One refresh at a time; a request made meanwhile runs once after it.
  let running = false, again = false, shown = "";
  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        const p = new URLSearchParams({ limit: String(LIMIT) });
        if (state.domain) p.set("domain", state.domain);
        if (state.user) p.set("user", state.user);
        if (state.q) p.set("q", state.q);
        try {
          const [mailboxes, messages] = await Promise.all([api("/api/v1/mailboxes"), api("/api/v1/messages?" + p)]);
          // Redrawn only when something changed: a redraw loses the hover and the keyboard's place.
          const key = JSON.stringify([state, mailboxes, messages]);
          if (key !== shown) {
            shown = key;
            drawMailboxes(mailboxes);
            drawList(messages);
          }
        } catch (error) {
          shown = "";
          mn.showError(list, error);
        }
      } while (again);
    } finally {
      running = false;
    }
  }

  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = search.value.trim(); remember(); refresh(); }, 250);
  });
  document.getElementById("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(typing);
    state.q = search.value.trim();
    remember();
    refresh();
  });
  // "/" goes to the search box, as in other mail tools.
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    e.preventDefault();
    search.focus();
  });

  // Live: each delivery (a message put into a Maildir) refreshes the list;
  // so does each (re)connection, for what was delivered while not connected.
  let timer = null;
  const later = () => { clearTimeout(timer); timer = setTimeout(refresh, 150); };
  const source = mn.events((event) => { if (event.event === "delivered") later(); }, { only: ["delivered"] });
  source.addEventListener("open", later);
  refresh();
})();
