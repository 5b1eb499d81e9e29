// The network page: the topology drawn with Cytoscape.js (domains, the
// resolver, a line between two domains once mail went from one to the other),
// each node coloured by its state and labelled with its queue, every relayed
// message running along its line as it happens; and the same as a table
// under it, which is also what remains when the graph library does not load.
// Live from the event stream, which brings only what is drawn from it: a state
// event recolours a node at once, a relayed one runs its dot, a deferred one
// asks for the queue sizes soon; the counters come from GET /api/v1/network
// every 1.5 s. The page costs a loaded network little: the launcher sends it
// none of the lines that every message brings, and Cytoscape draws at most
// 5 frames a second while nothing moves.
"use strict";

(() => {
  const { el, api } = mn;
  const wallStart = Date.now();
  const STATES = ["ready", "starting", "stopping", "killing", "stopped", "killed", "crashed", "failed"];
  const SMALL = 40;          // up to this many domains: a circle; more: a grid
  const LABELS_AT = 120;     // more nodes than this: labels only once zoomed in
  const MAX_DOTS = 40;       // moving dots at once; more relays only flash their line
  const REFRESH_MS = 1500;   // GET /api/v1/network this often, for the counters
  const STREAMED = ["state", "relayed", "deferred"];  // the events this page draws
  const IDLE_FRAME_MS = 200; // Cytoscape's frames while nothing moves: 5 a second
  const BUSY_MS = 1000;      // every frame for this long after a pointer, wheel, key or resize, a dot, the first draw

  const nodes = new Map();   // name -> {name, state, listen, counters..., queued, resolver}
  const edges = new Map();   // "a|b" (sorted) -> {a, b, count}
  const rows = new Map();    // name -> {row, cells}
  let cy = null;
  let animations = 0;
  let activeDots = 0;
  let dotSeq = 0;
  let loadMs = null;
  let graphError = null;

  const errorBox = document.getElementById("error");
  const container = document.getElementById("nodes");
  const graphBox = document.getElementById("graph");

  function edgeKey(a, b) { return a < b ? a + "|" + b : b + "|" + a; }
  function domainOf(address) {
    const at = String(address || "").lastIndexOf("@");
    return at < 0 ? "" : address.slice(at + 1).toLowerCase().replace(/\.$/, "");
  }
  function pageOf(name) { return "/node.html?name=" + encodeURIComponent(name); }

  // ---- the colours: the state colours of app.css, so the list and the graph agree
  const colours = {};
  function readColours() {
    const css = getComputedStyle(document.documentElement);
    for (const s of STATES) colours[s] = css.getPropertyValue("--" + s).trim() || "#757575";
    colours.stopping = colours.starting;
    colours.killing = colours.killed;
  }
  function colourOf(state) { return colours[state] || colours.stopped || "#757575"; }

  function labelOf(n) {
    if (n.resolver) return "resolver";
    return n.queued ? n.name + "\nqueue " + n.queued : n.name;
  }

  // ---- the frame rate
  // Cytoscape draws from a requestAnimationFrame loop that runs every frame
  // (60 a second) for as long as the page is open, moving or not; it is the
  // only user of requestAnimationFrame on this page. While no dot runs and
  // no one touched the page for BUSY_MS, its next frame waits IDLE_FRAME_MS:
  // a new colour shows within that, and an idle page costs a few frames a
  // second instead of 60. Dots, zoom and drag get every frame.
  let busyUntil = 0;
  const nativeFrame = window.requestAnimationFrame.bind(window);
  function busy() { busyUntil = performance.now() + BUSY_MS; }
  for (const type of ["pointerdown", "pointermove", "wheel", "keydown", "resize"])
    window.addEventListener(type, busy, { passive: true, capture: true });
  window.requestAnimationFrame = (fn) => {
    if (activeDots > 0 || performance.now() < busyUntil) return nativeFrame(fn);
    // Nothing to draw (Cytoscape's renderer says so): its loop goes on from
    // a timer, without asking the browser for a frame at all.
    const renderer = cy && cy.renderer ? cy.renderer() : null;
    if (renderer && renderer.requestedFrame === false) setTimeout(() => fn(performance.now()), IDLE_FRAME_MS);
    else setTimeout(() => nativeFrame(fn), IDLE_FRAME_MS);
    return 0;
  };

  // ---- the graph
  function fontSize() { return document.documentElement.classList.contains("large") ? 20 : 12; }

  function graphStyle() {
    const large = nodes.size > LABELS_AT;
    return [
      { selector: "node", style: {
        "background-color": "data(colour)", "label": large ? "" : "data(label)", "text-wrap": "wrap",
        "text-valign": "bottom", "text-margin-y": 4, "font-size": fontSize(), "color": "#1d1d1f",
        "text-background-color": "#ffffff", "text-background-opacity": 0.8, "text-background-padding": 2,
        "width": 26, "height": 26, "border-width": 2, "border-color": "#ffffff",
        "min-zoomed-font-size": large ? 9 : 0 } },
      // A big network: no label (none measured, none drawn) until zoomed in.
      { selector: "node.labelled", style: { "label": "data(label)" } },
      { selector: "node.resolver", style: { "shape": "diamond", "width": 34, "height": 34 } },
      { selector: "node.dot", style: {
        "width": 14, "height": 14, "background-color": "#f5a623", "label": "", "border-width": 0, "events": "no" } },
      { selector: "edge", style: {
        "width": "data(width)", "line-color": "#9aa0a6", "curve-style": "straight", "opacity": 0.8 } },
      { selector: "edge.flash", style: { "line-color": "#1a5fb4", "width": 6, "opacity": 1 } },
      { selector: "node:selected", style: { "border-color": "#f5a623", "border-width": 4 } },
    ];
  }

  function nodeElement(n) {
    return { group: "nodes", data: { id: n.name, label: labelOf(n), state: n.state, colour: colourOf(n.state) },
             classes: n.resolver ? "resolver" : "" };
  }

  function edgeWidth(count) { return Math.min(8, 1.5 + Math.log2(count)); }

  // Positions computed here, linear in the node count: no force layout and
  // no label measured. Up to SMALL domains on a circle with the resolver beside
  // it (a line between two domains never crosses it); more in a grid, the
  // resolver first.
  function layoutOptions() {
    const domains = [...nodes.values()].filter((n) => !n.resolver).sort((a, b) => (a.name < b.name ? -1 : 1));
    const resolver = [...nodes.values()].find((n) => n.resolver);
    const at = new Map();
    if (domains.length <= SMALL) {
      const radius = Math.max(120, domains.length * 22);
      domains.forEach((n, i) => {
        const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, domains.length);
        at.set(n.name, { x: radius * Math.cos(angle), y: radius * Math.sin(angle) });
      });
      if (resolver) at.set(resolver.name, { x: -radius * 1.7, y: 0 });
    } else {
      const order = resolver ? [resolver, ...domains] : domains;
      const columns = Math.max(1, Math.ceil(Math.sqrt(order.length * 1.8)));
      order.forEach((n, i) => at.set(n.name, { x: (i % columns) * 90, y: Math.floor(i / columns) * 70 }));
    }
    return { name: "preset", animate: false, fit: true, padding: 40, positions: (node) => at.get(node.id()) };
  }

  function buildGraph() {
    if (typeof window.cytoscape !== "function") {
      graphError = "the graph library (/vendor/cytoscape.min.js) did not load";
      graphBox.classList.add("unavailable");
      graphBox.replaceChildren(el("p", { class: "muted" }, "No graph: " + graphError + ". The list below shows the network."));
      return;
    }
    busy();  // the first frames come at once
    try {
      const elements = [...nodes.values()].map(nodeElement);
      for (const e of edges.values())
        elements.push({ group: "edges", data: { id: "e:" + edgeKey(e.a, e.b), source: e.a, target: e.b,
                                                 count: e.count, width: edgeWidth(e.count) } });
      cy = window.cytoscape({
        container: graphBox, elements, style: graphStyle(), layout: layoutOptions(),
        minZoom: 0.05, maxZoom: 4, wheelSensitivity: 0.3, boxSelectionEnabled: false,
        textureOnViewport: nodes.size > LABELS_AT, hideEdgesOnViewport: nodes.size > LABELS_AT,
      });
      if (nodes.size > LABELS_AT) {
        let labelled = false;
        cy.on("zoom", () => {
          const want = cy.zoom() * fontSize() >= 9;
          if (want === labelled) return;
          labelled = want;
          cy.batch(() => (want ? cy.nodes(":not(.dot)").addClass("labelled") : cy.nodes().removeClass("labelled")));
        });
      }
      cy.on("tap", "node", (e) => {
        const node = e.target;
        if (!node.hasClass("dot")) location.href = pageOf(node.id());
      });
      // From the start of navigation to the graph's first frame.
      cy.one("render", () => { loadMs = Math.round(performance.now()); });
      // Large type grows the labels too.
      new MutationObserver(() => cy && cy.style(graphStyle()))
        .observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
    } catch (error) {
      cy = null;
      graphError = String(error && error.message || error);
      graphBox.classList.add("unavailable");
      graphBox.replaceChildren(el("p", { class: "error" }, "No graph: " + graphError + ". The list below shows the network."));
    }
  }

  function updateGraphNode(n) {
    if (!cy) return;
    const node = cy.getElementById(n.name);
    if (node.empty()) return;
    // The poll brings every node each time: only a change is drawn again.
    const label = labelOf(n);
    if (node.data("label") === label && node.data("state") === n.state) return;
    node.data({ label, state: n.state, colour: colourOf(n.state) });
  }

  function addEdge(a, b, live) {
    if (!nodes.has(a) || !nodes.has(b) || a === b) return;
    const key = edgeKey(a, b);
    let e = edges.get(key);
    if (!e) {
      e = { a, b, count: 0 };
      edges.set(key, e);
      if (cy) cy.add({ group: "edges", data: { id: "e:" + key, source: a, target: b, count: 0, width: 1.5 } });
    }
    e.count += 1;
    if (cy) cy.getElementById("e:" + key).data({ count: e.count, width: edgeWidth(e.count) });
    updatePeers(a);
    updatePeers(b);
    if (live) animate(a, b);
  }

  // A relayed message: its line flashes and a dot runs from sender to receiver.
  function animate(from, to) {
    animations += 1;
    if (!cy) return;
    busy();  // the line's flash gets every frame too
    const key = edgeKey(from, to);
    cy.getElementById("e:" + key).flashClass("flash", 800);
    if (activeDots >= MAX_DOTS) return;
    const a = cy.getElementById(from), b = cy.getElementById(to);
    if (a.empty() || b.empty()) return;
    activeDots += 1;
    const dot = cy.add({ group: "nodes", data: { id: "dot:" + (++dotSeq), label: "" }, classes: "dot",
                         position: { ...a.position() }, grabbable: false, selectable: false });
    dot.animate({ position: { ...b.position() } }, {
      duration: 800, easing: "ease-in-out-sine",
      complete: () => { dot.remove(); activeDots -= 1; },
    });
  }

  // ---- the list
  const COUNTERS = ["received", "received_tls", "delivered", "relayed", "queued", "bounced"];
  const HEADINGS = { received_tls: "over TLS" };
  // STARTTLS on the node's port (policy.tls) and what its relay asks of the next node (policy.tls_relay).
  const MODES = [["tls", "STARTTLS"], ["tls_relay", "relay TLS"]];

  function buildList() {
    const head = el("tr", {}, el("th", { scope: "col" }, "node"), el("th", { scope: "col" }, "state"),
      el("th", { scope: "col" }, "listen"), MODES.map(([, h]) => el("th", { scope: "col" }, h)),
      COUNTERS.map((k) => el("th", { class: "num", scope: "col" }, HEADINGS[k] || k)),
      el("th", { scope: "col" }, "exchanged mail with"));
    const body = el("tbody");
    for (const n of nodes.values()) {
      const cells = {
        state: el("span", { class: "state " + n.state }, n.state),
        listen: el("td", {}, n.listen || ""),
        peers: el("td", { class: "peers" }),
      };
      for (const [k] of MODES) cells[k] = el("td", { "data-mode": k }, n.resolver ? "" : n[k] ?? "");
      for (const k of COUNTERS) cells[k] = el("td", { class: "num", "data-count": k }, n.resolver ? "" : n[k] ?? "");
      const row = el("tr", { "data-node": n.name, "data-state": n.state },
        el("th", { scope: "row" }, el("a", { href: pageOf(n.name) }, n.name)),
        el("td", {}, cells.state), cells.listen, MODES.map(([k]) => cells[k]), COUNTERS.map((k) => cells[k]),
        cells.peers);
      rows.set(n.name, { row, cells });
      body.append(row);
    }
    container.replaceChildren(el("table", { "aria-labelledby": "list-title" }, el("thead", {}, head), body));
  }

  // Text, a class or an attribute set only when it changes: the poll brings
  // every node every 1.5 s, and a write of the same text still costs the
  // browser a layout and a paint.
  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

  function updateRow(n) {
    const r = rows.get(n.name);
    if (!r) return;
    if (r.row.getAttribute("data-state") !== n.state) r.row.setAttribute("data-state", n.state);
    if (r.cells.state.className !== "state " + n.state) r.cells.state.className = "state " + n.state;
    setText(r.cells.state, n.state);
    setText(r.cells.listen, n.listen || "");
    if (!n.resolver) for (const k of [...MODES.map(([m]) => m), ...COUNTERS]) setText(r.cells[k], String(n[k] ?? ""));
  }

  function updatePeers(name) {
    const r = rows.get(name);
    if (!r) return;
    const peers = [];
    for (const e of edges.values()) {
      if (e.a === name) peers.push(e.b);
      else if (e.b === name) peers.push(e.a);
    }
    setText(r.cells.peers, peers.sort().join(", "));
  }

  function setState(name, state) {
    const n = nodes.get(name);
    if (!n || !state || n.state === state) return;
    n.state = state;
    updateRow(n);
    updateGraphNode(n);
  }

  // ---- loading and keeping it live
  let netName = "";
  function summary() {
    const domains = [...nodes.values()].filter((n) => !n.resolver);
    const ready = domains.filter((n) => n.state === "ready").length;
    setText(document.getElementById("summary"), domains.length + " domains (" + ready + " ready) · " + edges.size +
      (edges.size === 1 ? " link" : " links") + " that carried mail");
  }

  function take(net) {
    netName = net.name || "";
    setText(document.getElementById("title"), "Network " + netName);
    for (const raw of [net.resolver, ...(net.nodes || [])]) {
      if (!raw) continue;
      const resolver = raw === net.resolver;
      const n = nodes.get(raw.name) || { name: raw.name, resolver };
      Object.assign(n, raw, { resolver });
      nodes.set(n.name, n);
    }
  }

  async function refresh() {
    try {
      const net = await api("/api/v1/network");
      take(net);
      for (const n of nodes.values()) { updateRow(n); updateGraphNode(n); }
      summary();
      errorBox.replaceChildren();
    } catch (error) {
      mn.showError(errorBox, error);
    }
  }

  const refresher = mn.throttled(refresh, REFRESH_MS, 150);
  const refreshSoon = () => refresher.soon();

  // Events that come before the first load are kept and replayed onto it.
  let loaded = false;
  const early = [];

  function onEvent(ev) {
    if (!loaded) {
      if (early.length < 5000) early.push(ev);
      return;
    }
    if (ev.event === "state") {
      setState(ev.node, ev.state);
      summary();
      return;
    }
    if (ev.event === "relayed") {
      // Replayed past events draw their line; only what happens now moves.
      const t = Date.parse(ev.time);
      const live = !(t < wallStart - 1000);
      addEdge(ev.node, domainOf(ev.rcpt), live);
      const r = rows.get(ev.node);
      if (r && live) {
        r.row.classList.add("flash");
        setTimeout(() => r.row.classList.remove("flash"), 800);
      }
      summary();
    }
    // A deferred message waits in its queue: its size shown soon, not at the next poll.
    if (ev.event === "deferred") refreshSoon();
  }

  async function start() {
    readColours();
    const legend = document.getElementById("legend");
    legend.replaceChildren(...["ready", "starting", "stopped", "killed", "crashed", "failed"]
      .map((s) => el("li", { class: s }, s)));
    // The stream starts with the events the launcher still keeps (?since=0):
    // the lines of mail already exchanged, and the latest states.
    mn.events(onEvent, { since: 0, only: STREAMED });
    performance.mark("mailnet:start");
    try {
      take(await api("/api/v1/network"));
      performance.mark("mailnet:network");
      refresher.ran();
    } catch (error) {
      mn.showError(errorBox, error);
      container.replaceChildren(el("p", { class: "muted" }, "The network could not be read."));
      return;
    }
    buildList();
    performance.mark("mailnet:list");
    buildGraph();
    performance.mark("mailnet:graph");
    loaded = true;
    for (const ev of early.splice(0)) onEvent(ev);
    summary();
    // The counters: polled, while the page is seen (a hidden tab asks nothing).
    setInterval(() => { if (!document.hidden) refresher.soon(); }, REFRESH_MS);
    if (!cy) loadMs = Math.round(performance.now());
  }

  // A read-only view of the graph for tests and for measuring the page.
  window.mailnetGraph = Object.freeze({
    available: () => cy !== null,
    error: () => graphError,
    loadMs: () => loadMs,
    layout: () => (cy ? (nodes.size - 1 <= SMALL ? "circle" : "grid") : null),
    animations: () => animations,
    nodes: () => (cy ? cy.nodes(":not(.dot)").map((n) => ({
      id: n.id(), state: n.data("state"), label: n.data("label"), colour: n.style("background-color"),
      x: n.renderedPosition("x"), y: n.renderedPosition("y") })) : []),
    edges: () => (cy ? cy.edges().map((e) => ({ source: e.source().id(), target: e.target().id(),
                                                count: e.data("count"), flashing: e.hasClass("flash") })) : []),
    colourOf: (state) => colourOf(state),
    fontSize: () => (cy && cy.nodes().length ? parseFloat(cy.nodes().first().style("font-size")) : null),
  });

  start();
})();
