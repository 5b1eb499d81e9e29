// The send page: a form that sends a message as `mailnet send` does, through
// POST /api/v1/send (from, to, cc, bcc, subject, body, and each attachment's
// bytes in base64, read here with FileReader). Shows where the message went
// and its queue id, or the server's reason in full.
"use strict";

(() => {
  const { el, api } = mn;
  const form = document.getElementById("send-form");
  const fromSelect = document.getElementById("from-select");
  const fromOther = document.getElementById("from-other");
  const fileInput = document.getElementById("attachments");
  const fileList = document.getElementById("attachment-list");
  const sendButton = document.getElementById("send");
  const result = document.getElementById("result");
  const OTHER = "*other";  // no "@": never an address

  // The server takes a send request of at most this many bytes (the
  // attachments in base64 make most of it); told here before any upload.
  const MAX_REQUEST_BYTES = 10 * 1024 * 1024;

  function formatSize(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  // The From choices: every user of every domain of the network (the
  // topology's users, from /api/v1/mailboxes), then "Another address…", which
  // shows a text field.
  async function loadUsers() {
    const byDomain = new Map();
    const add = (domain, user) => {
      if (!domain) return;
      if (!byDomain.has(domain)) byDomain.set(domain, new Set());
      if (user) byDomain.get(domain).add(user);
    };
    let reason = null;
    try {
      const boxes = await api("/api/v1/mailboxes");
      for (const d of boxes.domains || []) {
        add(d.domain);
        for (const u of d.users || []) add(d.domain, u.user);
      }
    } catch (error) {
      reason = error;
    }
    const options = [];
    for (const [domain, users] of [...byDomain.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      if (users.size === 0) continue;
      options.push(el("optgroup", { label: domain },
        [...users].sort().map((user) => el("option", { value: user + "@" + domain }, user + "@" + domain))));
    }
    options.push(el("option", { value: OTHER }, "Another address…"));
    fromSelect.replaceChildren(...options);
    if (options.length === 1) {
      fromSelect.value = OTHER;
      if (reason) document.getElementById("from-help").textContent =
        "The network's users could not be read (" + reason.message + "): type the sender's address.";
    }
    syncFrom();
  }

  function restore(value) {
    if ([...fromSelect.options].some((o) => o.value === value)) fromSelect.value = value;
    syncFrom();
  }

  function syncFrom() {
    const other = fromSelect.value === OTHER;
    fromOther.hidden = !other;
    fromOther.required = other;
  }

  function fromValue() {
    return fromSelect.value === OTHER ? fromOther.value.trim() : fromSelect.value;
  }

  // "a@x, B <b@y>" as one string: the server splits a list as `mailnet send`
  // does (commas outside quotes and <>), so it is sent as typed.
  function addresses(id) {
    const text = document.getElementById(id).value.trim();
    return text ? [text] : [];
  }

  function showFiles() {
    const files = [...fileInput.files];
    fileList.replaceChildren(...files.map((f) =>
      el("li", {}, f.name, " ", el("span", { class: "muted" }, "(" + formatSize(f.size) + (f.type ? ", " + f.type : "") + ")"))));
  }

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        const url = String(reader.result);
        resolve(url.slice(url.indexOf(",") + 1));  // "data:type;base64,...." -> the base64
      };
      reader.onerror = () => reject(new Error("attachment " + file.name + ": cannot be read (" +
        (reader.error ? reader.error.message : "unknown error") + ")"));
      reader.readAsDataURL(file);
    });
  }

  async function request() {
    const files = [...fileInput.files];
    const estimate = files.reduce((n, f) => n + Math.ceil(f.size / 3) * 4, 0);
    if (estimate > MAX_REQUEST_BYTES)
      throw new Error("the attachments are " + formatSize(estimate) + " in base64; the dashboard sends at most " +
                      formatSize(MAX_REQUEST_BYTES) + " in one message (mailnet send --attach takes files of any size)");
    const attachments = [];
    for (const file of files)
      attachments.push({ name: file.name, content_type: file.type || "", data: await readBase64(file) });
    return {
      from: fromValue(),
      to: addresses("to"),
      cc: addresses("cc"),
      bcc: addresses("bcc"),
      subject: document.getElementById("subject").value,
      body: document.getElementById("body").value,
      attachments,
    };
  }

  // The first recipient's mailbox on the Mail page.
  function mailLink(to) {
    const m = /([^\s<>,"]+)@([^\s<>,"]+)/.exec(to || "");
    const href = m ? "/mail.html?domain=" + encodeURIComponent(m[2].toLowerCase()) +
      "&user=" + encodeURIComponent(m[1].toLowerCase()) : "/mail.html";
    return el("a", { id: "mail-link", href }, m ? "See " + m[1] + "@" + m[2] + "’s mail on the Mail page" : "Open the Mail page");
  }

  // POST /api/v1/send: the reply's document also when it is an error (a
  // partial refusal names each recipient's fate).
  async function post(body) {
    const reply = await fetch("/api/v1/send", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const type = reply.headers.get("Content-Type") || "";
    const data = type.startsWith("application/json") ? await reply.json() : { error: (await reply.text()).trim() };
    if (!reply.ok) {
      const error = new Error(data && data.error ? data.error : reply.status + " " + reply.statusText);
      error.status = reply.status;
      error.data = data;
      throw error;
    }
    return data;
  }

  function describeRecipients(reply) {
    const rows = (reply.rcpts || []).map((r) => el("tr", { class: r.accepted ? null : "refused" },
      el("td", {}, r.address || ""),
      el("td", {}, r.accepted ? "accepted" : "refused"),
      el("td", { class: "mono" }, r.accepted && r.queue_id ? r.queue_id : r.reply || "")));
    if (rows.length === 0) return null;
    return el("table", { class: "recipients" },
      el("thead", {}, el("tr", {}, ["recipient", "result", "queue id / reply"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows));
  }

  function showSent(reply, sent) {
    const where = [reply.node, reply.address].filter(Boolean).join(" at ");
    const queueId = reply.queue_id || "";
    const parts = [
      el("h2", {}, "Sent"),
      el("dl", { class: "facts" },
        el("dt", {}, "Taken by"), el("dd", { id: "sent-node" }, where || "(the sender's node)"),
        queueId ? [el("dt", {}, "Queue id"), el("dd", {}, el("code", { id: "queue-id" }, queueId))] : null,
        reply.reply ? [el("dt", {}, "Reply"), el("dd", {}, el("code", {}, reply.reply))] : null,
        reply.message_id ? [el("dt", {}, "Message-ID"), el("dd", {}, el("code", {}, reply.message_id))] : null,
        sent.attachments.length ? [el("dt", {}, "Attachments"),
          el("dd", {}, sent.attachments.map((a) => a.name).join(", "))] : null),
      describeRecipients(reply),
      el("p", {}, mailLink(sent.to[0] || sent.cc[0] || sent.bcc[0])),
    ];
    result.replaceChildren(el("div", { class: "card sent", role: "status" }, parts));
  }

  function showFailure(error) {
    const data = error.data || {};
    const some = (data.rcpts || []).some((r) => r.accepted);
    result.replaceChildren(el("div", { class: "card failed", role: "alert" },
      el("h2", {}, some ? "Not sent to every recipient" : "Not sent"),
      el("p", { class: "error", id: "send-error" }, String(error.message || error)),
      data.node ? el("p", {}, "Node: " + data.node + (data.address ? " at " + data.address : "")) : null,
      describeRecipients(data),
      error.status ? el("p", { class: "muted" }, "The server answered HTTP " + error.status + ".") : null));
  }

  let busy = false;
  async function send(event) {
    event.preventDefault();
    if (busy) return;
    busy = true;
    sendButton.disabled = true;
    sendButton.textContent = "Sending…";
    result.replaceChildren(el("p", { class: "muted", role: "status" }, "Sending…"));
    try {
      const body = await request();
      const reply = await post(body);
      showSent(reply, body);
    } catch (error) {
      showFailure(error);
    } finally {
      busy = false;
      sendButton.disabled = false;
      sendButton.textContent = "Send";
    }
  }

  form.addEventListener("submit", send);
  form.addEventListener("reset", () => {
    setTimeout(() => { syncFrom(); showFiles(); result.replaceChildren(); }, 0);
  });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  fromSelect.addEventListener("change", () => { syncFrom(); if (!fromOther.hidden) fromOther.focus(); });
  fileInput.addEventListener("change", showFiles);
  // A mailbox that receives its first message joins the From choices (when
  // they come from delivered mail); the header shows the stream's state.
  let reload = null;
  mn.events((event) => {
    if (event.event !== "delivered" || !event.mailbox || !event.node) return;
    if (fromSelect.querySelector(`option[value="${CSS.escape(event.mailbox + "@" + event.node)}"]`)) return;
    clearTimeout(reload);
    reload = setTimeout(() => { const keep = fromSelect.value; loadUsers().then(() => restore(keep)); }, 300);
  }, { only: ["delivered"] });
  loadUsers();
})();
