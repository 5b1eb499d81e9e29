// The DNS page: the resolver's state and query counters, the zone it serves
// (every domain's SRV, MX and A records) and the latest queries it answered
// or dropped. Live: refreshed shortly after each event of the resolver on the
// event stream, and every 3 s besides (a query the resolver logs only to its
// file, or a stream that is reconnecting, still shows within seconds).
"use strict";

(() => {
  const { el, api } = mn;
  const resolverBox = document.getElementById("resolver");
  const zoneBox = document.getElementById("zone");
  const queriesBox = document.getElementById("queries");
  const POLL_MS = 3000;

  function head(columns) {
    return el("thead", {}, el("tr", {}, columns.map(([label, cls]) => el("th", { scope: "col", class: cls || null }, label))));
  }

  // Prometheus text -> [{name, labels, value}] for the resolver's series.
  function resolverMetrics(text) {
    const out = [];
    for (const line of String(text).split("\n").slice(0, 10000)) {
      if (!line || line.startsWith("#")) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const [, name, labels = "", value] = m;
      if (/resolver|dns/.test(name) || /node="resolver"/.test(labels)) out.push({ name, labels: labels.slice(1, -1), value });
    }
    return out;
  }

  function showResolver(node, dns, metrics) {
    const facts = [];
    const fact = (label, value, id) => facts.push(el("span", { id: id || null }, el("span", { class: "label" }, label), value));
    if (node) {
      fact("state", el("span", { class: "state " + node.state, id: "resolver-state" }, node.state));
      fact("listen", el("code", {}, node.listen || dns?.resolver || ""));
      fact("pid", node.pid ? String(node.pid) : "—");
      fact("up", node.uptime_s !== undefined ? node.uptime_s + " s" : "—");
      fact("restarts", String(node.restarts ?? 0));
      if (node.exit) fact("last exit", node.exit);
    } else if (dns) {
      fact("listen", el("code", {}, dns.resolver));
    }
    if (dns) {
      fact("TTL", dns.ttl + " s");
      if (dns.soa) fact("SOA", el("code", {}, dns.soa));
    }
    const parts = [el("div", { class: "resolver-state" }, facts)];
    // Its counters: queries answered by type and answer code, and dropped.
    const counted = metrics.filter((m) => m.name.startsWith("mailnet_resolver_"));
    if (counted.length) {
      const label = (m) => {
        if (m.name === "mailnet_resolver_dropped_total") return "dropped";
        const type = /type="([^"]*)"/.exec(m.labels), rcode = /rcode="([^"]*)"/.exec(m.labels);
        return [type && type[1], rcode && rcode[1]].filter(Boolean).join(" ") || m.name + (m.labels ? "{" + m.labels + "}" : "");
      };
      parts.push(el("p", { id: "resolver-metrics", class: "counters" }, el("span", { class: "label" }, "queries"),
        counted.map((m) => el("span", { class: "counter" }, label(m) + " ", el("b", {}, m.value)))));
    }
    resolverBox.replaceChildren(...parts);
  }

  function showZone(dns) {
    const body = [];
    for (const d of dns.domains || []) {
      const records = d.records || [];
      if (records.length === 0) {
        body.push(el("tr", { "data-domain": d.domain }, el("th", { scope: "row" }, d.domain),
          el("td", { colspan: 4, class: "muted" }, "no records")));
        continue;
      }
      records.forEach((r, i) => body.push(el("tr", { "data-domain": d.domain },
        i === 0 ? el("th", { scope: "rowgroup", rowspan: records.length }, d.domain) : null,
        el("td", { class: "mono" }, r.name), el("td", {}, r.type), el("td", { class: "num" }, r.ttl),
        el("td", { class: "mono" }, r.data))));
    }
    zoneBox.replaceChildren(el("table", { id: "zone-table" },
      head([["domain"], ["name"], ["type"], ["TTL", "num"], ["target / data"]]), el("tbody", {}, body)));
  }

  let seen = null;  // the keys of the queries shown last time: new ones are marked
  function showQueries(dns) {
    const queries = dns.queries || [];
    const key = (q) => [q.time, q.client, q.transport, q.name, q.type].join(" ");
    const before = seen;
    seen = new Set(queries.map(key));
    if (queries.length === 0) {
      queriesBox.replaceChildren(el("p", { class: "muted", id: "no-queries" }, "No queries yet."));
      return;
    }
    const rows = queries.map((q) => {
      const classes = [q.answered === false ? "dropped" : null, before && !before.has(key(q)) ? "fresh" : null]
        .filter(Boolean).join(" ");
      return el("tr", { class: classes || null },
        el("td", {}, mn.formatTime(q.time)), el("td", { class: "mono" }, q.client), el("td", {}, q.transport),
        el("td", { class: "mono" }, q.name), el("td", {}, q.type),
        el("td", {}, q.answered === false ? "dropped" + (q.reason ? ": " + q.reason : "") : q.rcode),
        el("td", { class: "mono" }, q.answer));
    });
    queriesBox.replaceChildren(...[
      el("table", { id: "queries-table" },
        head([["time"], ["client"], ["transport"], ["name"], ["type"], ["result"], ["answer"]]), el("tbody", {}, rows)),
      dns.queries_cut ? el("p", { class: "muted help" }, "Older queries are not shown (only the end of resolver.log is read).") : null,
    ].filter(Boolean));
  }

  let running = false, again = false;
  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      const [dns, net, metrics] = await Promise.all([
        api("/api/v1/dns"),
        api("/api/v1/network").catch(() => null),
        api("/metrics").catch(() => ""),
      ]);
      showResolver(net && net.resolver, dns, resolverMetrics(metrics));
      showZone(dns);
      showQueries(dns);
    } catch (error) {
      mn.showError(queriesBox, error);
      if (!zoneBox.querySelector("table")) mn.showError(zoneBox, error);
    } finally {
      running = false;
      if (again) { again = false; setTimeout(refresh, 0); }
    }
  }

  let soon = null;
  mn.events((event) => {
    if (event.node !== "resolver") return;
    clearTimeout(soon);
    soon = setTimeout(refresh, 200);
  });
  setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  refresh();
})();
