// The message view (message.html?id=ID): headers, text, the HTML body in a
// sandboxed frame (no scripts, nothing fetched: its own answer's policy
// says so too), attachments to download, the raw source, and the message's
// path across the network drawn as a timeline, one lane per node.
"use strict";

(() => {
  const { el, api } = mn;
  const id = mn.param("id") || "";
  const box = document.getElementById("message");
  const traceBox = document.getElementById("trace");
  const bodyBox = document.getElementById("message-body");
  const base = "/api/v1/messages/" + encodeURIComponent(id);
  const SVG = "http://www.w3.org/2000/svg";

  function field(name, value) {
    return value ? [el("dt", {}, name), el("dd", {}, value)] : [];
  }

  function section(title, ...content) {
    return el("section", { class: "card" }, el("h2", {}, title), ...content);
  }

  // How the message reached its mailbox, from the newest Received: field (the
  // last node's): "with ESMTPS" / "ESMTPSA" and "(using TLSv1.3 with cipher
  // ...)" for TLS (RFC 3848), plain SMTP or ESMTP otherwise.
  function arrival(headers) {
    const received = headers.find(([name]) => name.toLowerCase() === "received");
    if (!received) return "";
    const value = received[1];
    const protocol = (/\bwith\s+(ESMTPSA|ESMTPS|ESMTPA|ESMTP|SMTP|LMTP)\b/i.exec(value) || [])[1] || "";
    const using = /\(using\s+(\S+)\s+with\s+cipher\s+([^)\s]+)\)/.exec(value);
    const from = (/^\s*from\s+(\S+)/i.exec(value) || [])[1];
    const over = /^ESMTPSA?$/i.test(protocol)
      ? "over TLS" + (using ? " (" + using[1] + ", " + using[2] + ")" : "")
      : "in plain text";
    return over + (protocol ? ", with " + protocol.toUpperCase() : "") + (from ? ", from " + from : "");
  }

  function draw(m) {
    document.title = "mailnet · " + (m.subject || "(no subject)");
    const parts = [];
    parts.push(el("h1", { id: "subject" }, m.subject || "(no subject)",
      m.bounce ? el("span", { class: "badge bounce", title: "a delivery status notification (bounce)" }, "bounce") : null));
    parts.push(el("dl", { class: "fields" },
      field("From", m.from), field("To", m.to), field("Cc", m.cc), field("Date", m.date),
      field("Message-ID", m.message_id),
      field("Arrived", arrival(m.headers || [])),
      field("Mailboxes", m.mailboxes.map((b) => b.user + "@" + b.domain + (b.folder === "Junk" ? " (Junk)" : "") + (b.unread ? " (unread)" : "")).join(", ")),
      field("Size", m.size + " bytes")));
    box.replaceChildren(...parts);  // then the trace, then the body
    parts.length = 0;

    if (m.attachments.length) {
      parts.push(section("Attachments", el("ul", { class: "attachments" }, m.attachments.map((a) =>
        el("li", {}, el("a", { href: `${base}/attachments/${a.index}`, download: a.name || `attachment-${a.index}`,
          "data-index": a.index }, a.name || `attachment ${a.index}`),
        el("span", { class: "muted" }, ` ${a.type}, ${a.size} bytes`))))));
    }
    if (m.html) {
      // No allow-scripts, no allow-same-origin: the frame is a page of an
      // opaque origin that runs nothing; its answer's own policy blocks every
      // fetch (remote images included) besides.
      parts.push(section("HTML", el("iframe", { id: "html-body", class: "mail-html", sandbox: true,
        src: base + "/html", title: "the message's HTML body (scripts off, remote content blocked)",
        referrerpolicy: "no-referrer" })));
    }
    parts.push(section("Text", m.text ? el("pre", { id: "text-body" }, m.text)
      : el("p", { class: "muted" }, "This message has no text part.")));
    if (m.mime_errors && m.mime_errors.length) {
      parts.push(section("What could not be read", el("ul", {}, m.mime_errors.map((e) => el("li", {}, e)))));
    }
    parts.push(el("details", { class: "card" }, el("summary", {}, `Header fields (${m.headers.length})`),
      el("table", { class: "headers" }, el("tbody", {}, m.headers.map(([name, value]) =>
        el("tr", {}, el("th", { scope: "row" }, name), el("td", {}, value)))))));

    const rawPre = el("pre", { id: "raw", hidden: true });
    const rawButton = el("button", { type: "button", id: "show-raw", "aria-expanded": "false",
      "aria-controls": "raw" }, "Show the raw source");
    rawButton.addEventListener("click", async () => {
      if (!rawPre.hidden) {
        rawPre.hidden = true;
        rawButton.setAttribute("aria-expanded", "false");
        rawButton.textContent = "Show the raw source";
        return;
      }
      try {
        const reply = await fetch(base + "/raw");
        if (!reply.ok) throw new Error("the raw source: " + reply.status + " " + reply.statusText);
        rawPre.textContent = await reply.text();
        rawPre.hidden = false;
        rawButton.setAttribute("aria-expanded", "true");
        rawButton.textContent = "Hide the raw source";
      } catch (error) {
        rawPre.hidden = false;
        rawPre.textContent = String(error.message || error);
      }
    });
    parts.push(section("Raw source", el("p", {}, rawButton, " ",
      el("a", { href: base + "/raw", download: id + ".eml", id: "raw-link" }, "Download as .eml")), rawPre));
    bodyBox.replaceChildren(...parts);
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  const KNOWN = new Set(["time", "node", "event"]);
  function details(e) {
    return Object.entries(e).filter(([k]) => !KNOWN.has(k)).map(([k, v]) => `${k}=${v}`).join(" ");
  }

  function kind(event) {
    if (["delivered", "relayed", "saved", "attachments_saved"].includes(event)) return "ok";
    if (["deferred", "relay_failed"].includes(event) || /defer|retry/.test(event)) return "wait";
    if (/bounce|fail|error|reject|dropped/.test(event)) return "bad";
    return "step";
  }

  // One lane per node (in the order the message reached them), one column
  // per event in time order: the message's path reads left to right.
  // follow: scrolled to the newest event (a live redraw), else from the first.
  function drawTrace(t, follow) {
    const events = t.events || [];
    if (!events.length) {
      traceBox.replaceChildren(el("p", { class: "muted" }, "No node logged an event for this message."));
      return;
    }
    const lanes = [];
    for (const e of events) if (!lanes.includes(e.node)) lanes.push(e.node);
    // The lanes' names stay in view on the left while the events scroll.
    const names = 170, left = 0, col = 120, laneH = 64, top = 10;
    const width = left + events.length * col + 10, height = top + lanes.length * laneH + 10;
    const labels = svg("svg", { class: "timeline timeline-names", width: names, height,
      viewBox: `0 0 ${names} ${height}`, "aria-hidden": "true" });
    const picture = svg("svg", { class: "timeline", width, height, viewBox: `0 0 ${width} ${height}`,
      role: "img", "aria-label": `the message's path: ${events.length} events across ${lanes.join(", ")}` });
    lanes.forEach((name, i) => {
      const y = top + i * laneH + laneH / 2;
      const band = i % 2 ? "lane-odd" : "lane-even";
      labels.append(svg("g", { class: "lane-label" },
        svg("rect", { x: 0, y: top + i * laneH, width: names, height: laneH, class: band }),
        svg("text", { x: 8, y: y + 5, class: "lane-name" }, name)));
      picture.append(svg("g", { class: "lane", "data-node": name },
        svg("rect", { x: 0, y: top + i * laneH, width, height: laneH, class: band }),
        svg("line", { x1: 0, y1: y, x2: width - 10, y2: y, class: "lane-line" })));
    });
    const point = (e, i) => [left + i * col + col / 2, top + lanes.indexOf(e.node) * laneH + laneH / 2];
    const path = events.map((e, i) => point(e, i).join(",")).join(" ");
    picture.append(svg("polyline", { points: path, class: "path" }));
    events.forEach((e, i) => {
      const [x, y] = point(e, i);
      const time = String(e.time || "").slice(11, 23);
      picture.append(svg("g", { class: "event " + kind(e.event), "data-node": e.node, "data-event": e.event },
        svg("title", {}, `${e.time} ${e.node} ${e.event} ${details(e)}`),
        svg("circle", { cx: x, cy: y, r: 7 }),
        svg("text", { x, y: y - 13, class: "event-name" }, e.event),
        svg("text", { x, y: y + 22, class: "event-time" }, time)));
    });
    const table = el("table", { class: "trace-events" },
      el("thead", {}, el("tr", {}, ["time", "node", "event", "details"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, events.map((e) => el("tr", {}, el("td", { class: "date" }, e.time), el("td", {}, e.node),
        el("td", {}, e.event), el("td", { class: "details" }, details(e))))));
    const scroller = el("div", { class: "timeline-scroll", tabindex: 0, "aria-label": "timeline" }, picture);
    const open = traceBox.querySelector("details[open]") !== null;
    traceBox.replaceChildren(
      el("p", { class: "muted" }, `${t.message_id || ""} · ${lanes.length} node${lanes.length === 1 ? "" : "s"}, ` +
        `${events.length} events`),
      el("div", { class: "timeline-wrap" }, labels, scroller),
      el("details", { open }, el("summary", {}, "Every event as text"), table));
    if (follow) scroller.scrollLeft = scroller.scrollWidth;
  }

  async function load() {
    if (!id) {
      mn.showError(box, new Error("no message named: open this page as message.html?id=ID"));
      traceBox.replaceChildren();
      return;
    }
    try {
      draw(await api(base));
    } catch (error) {
      mn.showError(box, error);
    }
    await redrawTrace(false);
  }

  // A message's trace grows while it is still on its way (a deferred relay,
  // a bounce): an event of one of its queue ids, or a node accepting its
  // Message-ID, redraws it.
  let timer = null, ids = new Set(), messageId = null;
  async function redrawTrace(follow) {
    try {
      const t = await api(base + "/trace");
      ids = new Set((t.queue_ids || []).map((q) => q.id));
      messageId = t.message_id || null;
      drawTrace(t, follow);
    } catch (error) {
      mn.showError(traceBox, error);
    }
  }
  mn.events((event) => {
    const ours = ids.has(event.id) || ids.has(event.for) || (messageId && event.message_id === messageId);
    if (!ours) return;
    clearTimeout(timer);
    timer = setTimeout(() => redrawTrace(true), 300);
  });
  load();
})();
