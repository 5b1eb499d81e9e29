// The network page: every node with its state and counters, kept live from
// the event stream. (A first list view; the graph comes with the graph page.)
"use strict";

(() => {
  const { el, api } = mn;
  const container = document.getElementById("nodes");

  function row(node) {
    const c = node;
    return el("tr", { "data-node": node.name },
      el("td", {}, el("a", { href: "/node.html?name=" + encodeURIComponent(node.name) }, node.name)),
      el("td", {}, el("span", { class: "state " + node.state }, node.state)),
      el("td", {}, node.listen || ""),
      ["received", "delivered", "relayed", "queued", "bounced"].map((k) => el("td", { class: "num" }, c[k] ?? "")));
  }

  async function refresh() {
    try {
      const net = await api("/api/v1/network");
      document.getElementById("title").textContent = "Network " + net.name;
      const head = el("tr", {}, ["node", "state", "listen", "received", "delivered", "relayed", "queued", "bounced"]
        .map((h, i) => el("th", { class: i > 2 ? "num" : null, scope: "col" }, h)));
      container.replaceChildren(el("table", {}, el("thead", {}, head),
        el("tbody", {}, [net.resolver, ...net.nodes].filter(Boolean).map(row))));
    } catch (error) {
      mn.showError(container, error);
    }
  }

  let timer = null;
  mn.events(() => { clearTimeout(timer); timer = setTimeout(refresh, 150); });
  refresh();
})();
