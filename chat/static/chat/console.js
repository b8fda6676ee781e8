/*
 * Patron agent console: live inbox, the conversation, the shopper's context.
 * Speaks the agent side of docs/chat-protocol.md over /ws/console/ (session cookie auth).
 * Every text from shoppers, agents, the bot or context providers is rendered as text nodes,
 * never parsed as HTML. Vanilla ES2020, no build step.
 */
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("console-config").textContent);
  const ME = config.agent || { id: null, name: "" };
  const MAX_BODY = config.max_body || 4000;
  const API = (config.api_base || "/api/chat/").replace(/\/?$/, "/");
  const WS_URL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${config.ws_path || "/ws/console/"}`;
  const TYPING_EVERY_MS = 3000;
  const TYPING_SHOW_MS = 6000;
  const PING_MS = 25000;
  // Django's JavaScriptCatalog (/jsi18n/, loaded before this file) in the agent's language.
  const gettext = window.gettext || ((msgid) => msgid);
  // Named placeholders only: %(name)s.
  const interpolate = (fmt, obj) => fmt.replace(/%\(\w+\)s/g, (m) => String(obj[m.slice(2, -2)]));
  const STATE_LABELS = { bot: gettext("With the bot"), queued: gettext("Queued"), assigned: gettext("Assigned"), resolved: gettext("Resolved") };

  const $ = (id) => document.getElementById(id);
  const dom = {
    connection: $("connection"),
    presence: $("presence"),
    tabs: Array.from(document.querySelectorAll('[role="tab"]')),
    counts: Object.fromEntries(Array.from(document.querySelectorAll("[data-count]"), (n) => [n.dataset.count, n])),
    search: $("inbox-search"),
    stateFilter: $("inbox-state"),
    labelFilter: $("inbox-label"),
    labelList: $("label-list"),
    labelForm: $("label-form"),
    labelInput: $("label-input"),
    snooze: $("snooze-select"),
    unsnooze: $("unsnooze-button"),
    list: $("inbox-list"),
    listEmpty: $("inbox-empty"),
    threadEmpty: $("thread-empty"),
    thread: $("thread-body"),
    title: $("thread-title"),
    subtitle: $("thread-subtitle"),
    assign: $("assign-button"),
    transfer: $("transfer-select"),
    transcript: $("transcript-button"),
    resolve: $("resolve-button"),
    messages: $("messages"),
    typing: $("typing"),
    composer: $("composer"),
    input: $("composer-input"),
    inputLabel: $("composer-label"),
    modeReply: $("mode-reply"),
    modeNote: $("mode-note"),
    canned: $("canned"),
    cannedButton: $("canned-button"),
    send: $("send-button"),
    contextEmpty: $("context-empty"),
    contextSections: $("context-sections"),
    toasts: $("toasts"),
  };

  // ---------------------------------------------------------------------------------------
  // DOM helpers: text only.
  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/;
  // Times today show the time only; other days the date, with the year unless it is this
  // year's ("3 Mar, 14:05", "28 Nov 2023, 09:12"): an order or a visit years ago must not read
  // as this year's.
  function formatTime(iso, withDate) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    const now = new Date();
    const sameDay = now.toDateString() === date.toDateString();
    if (withDate || !sameDay) {
      const options = { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
      if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
      return date.toLocaleString([], options);
    }
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function ago(iso) {
    const date = new Date(iso);
    if (!iso || Number.isNaN(date.getTime())) return "";
    const seconds = Math.max(0, (Date.now() - date.getTime()) / 1000);
    if (seconds < 60) return gettext("now");
    if (seconds < 3600) return interpolate(gettext("%(count)sm"), { count: Math.floor(seconds / 60) });
    if (seconds < 86400) return interpolate(gettext("%(count)sh"), { count: Math.floor(seconds / 3600) });
    return interpolate(gettext("%(count)sd"), { count: Math.floor(seconds / 86400) });
  }
  function humanize(key) {
    const text = String(key).replace(/_/g, " ").trim();
    return text.charAt(0).toUpperCase() + text.slice(1);
  }
  function safeHref(value) {
    try {
      const url = new URL(String(value), location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }
  function shopperName(summary) {
    const shopper = (summary && summary.shopper) || {};
    return shopper.name || shopper.email || shopper.customer_id || interpolate(gettext("Visitor #%(id)s"), { id: shopper.id || "?" });
  }
  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
  }

  function toast(text, kind) {
    const node = h("div", { class: `toast${kind ? ` toast--${kind}` : ""}`, text });
    dom.toasts.append(node);
    setTimeout(() => node.remove(), 5000);
  }

  // ---------------------------------------------------------------------------------------
  // State.
  const state = {
    socket: null,
    open: false,
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    view: "unassigned",
    viewSettled: false, // false until the server's first snapshot (or a click) chose the tab
    conversations: new Map(), // id -> summary (current list)
    order: [], // ids in list order
    counts: { unassigned: 0, mine: 0, all: 0, snoozed: 0 },
    selectedId: null,
    selected: null, // summary of the open conversation
    rendered: new Set(), // seqs rendered in the open conversation
    maxSeq: 0,
    readSent: 0,
    seen: new Map(), // conversation id -> last seq the agent saw
    pending: new Map(), // client_id -> {conversation_id, body, internal}
    mode: "reply",
    typingActive: false,
    typingSentAt: 0,
    typingTimer: null,
    canned: [],
    cannedIndex: 0,
    cannedFiltered: [],
    agents: new Map(),
    requery: null,
    refSeq: 0,
  };

  // ---------------------------------------------------------------------------------------
  // Socket.
  function send(frame) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
    state.socket.send(JSON.stringify(frame));
    return true;
  }
  function nextRef() {
    state.refSeq += 1;
    return `r-${state.refSeq}`;
  }

  function setConnection(label, kind) {
    dom.connection.textContent = label;
    dom.connection.dataset.state = kind;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    setConnection(state.attempt ? gettext("Reconnecting…") : gettext("Connecting…"), "connecting");
    // Reconnecting with a conversation open: the server re-opens it from the last seq shown
    // before it sends any live event, so missed messages arrive first and in order.
    const resuming = Boolean(state.selectedId);
    const socket = new WebSocket(resuming ? `${WS_URL}?resume=${state.selectedId}:${state.maxSeq}` : WS_URL);
    let opened = false;
    state.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      state.attempt = 0;
      state.open = true;
      setConnection(gettext("Connected"), "online");
      if (dom.presence.value === "away") send({ type: "presence.set", status: "away" });
      // The first time, the server's own snapshot picks the tab where the agent's work is.
      if (state.viewSettled) queryInbox();
      if (state.selectedId && !resuming) send({ type: "conversation.open", conversation_id: state.selectedId, last_seq: state.maxSeq, ref: nextRef() });
      resendPending();
      clearInterval(state.pingTimer);
      state.pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
    });
    socket.addEventListener("message", (event) => {
      if (socket !== state.socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      const handler = frame && handlers[frame.type];
      if (handler) handler(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== state.socket) return;
      state.open = false;
      state.socket = null;
      clearInterval(state.pingTimer);
      if (event.code === 4003) {
        setConnection(gettext("Not allowed: sign in as an agent"), "offline");
        setTimeout(() => location.assign(`/admin/login/?next=${encodeURIComponent(location.pathname)}`), 1500);
        return;
      }
      const delay = Math.min(10, 0.5 * 2 ** state.attempt) * (0.8 + Math.random() * 0.4) * 1000;
      state.attempt += 1;
      setConnection(gettext("Offline, reconnecting…"), "offline");
      state.reconnectTimer = setTimeout(connect, delay);
      // A refused handshake (HTTP 403: session expired, permission removed) looks like a
      // network error to the browser; ask the API whether we are still allowed in.
      if (!opened) checkSignedIn();
    });
  }

  async function checkSignedIn() {
    try {
      const response = await fetch(`${API}agents/`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401 || response.status === 403) {
        clearTimeout(state.reconnectTimer);
        setConnection(gettext("Signed out"), "offline");
        location.assign(`/admin/login/?next=${encodeURIComponent(location.pathname)}`);
      }
    } catch (_) {
      /* the server is down: keep retrying */
    }
  }

  function resendPending() {
    for (const [clientId, pending] of state.pending) {
      send({ type: "message.send", conversation_id: pending.conversation_id, client_id: clientId, body: pending.body, internal: pending.internal, ref: clientId });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Inbox.
  function queryInbox() {
    clearTimeout(state.requery);
    state.requery = null;
    const frame = { type: "inbox.query", view: state.view, limit: 100, ref: nextRef() };
    if (dom.stateFilter.value) frame.state = dom.stateFilter.value;
    const label = dom.labelFilter.value.trim();
    if (label) frame.label = label;
    const q = dom.search.value.trim();
    if (q) frame.q = q;
    send(frame);
  }
  function requeryLater() {
    // Counts and ordering come from the server; coalesce bursts of updates into one query.
    if (!state.requery) state.requery = setTimeout(queryInbox, 1500);
  }

  function belongs(summary) {
    if (Boolean(summary.snoozed) !== (state.view === "snoozed")) return false;
    const label = dom.labelFilter.value.trim().toLowerCase();
    if (label && !(summary.labels || []).includes(label)) return false;
    if (state.view === "unassigned" && summary.state !== "queued") return false;
    if (state.view === "mine" && !(summary.state === "assigned" && summary.assigned_agent && summary.assigned_agent.id === ME.id)) return false;
    if (dom.stateFilter.value && summary.state !== dom.stateFilter.value) return false;
    const q = dom.search.value.trim().toLowerCase();
    if (q) {
      const shopper = summary.shopper || {};
      const hay = [shopper.name, shopper.email, shopper.customer_id].filter(Boolean).join(" ").toLowerCase();
      if (!hay.includes(q)) return false;
    }
    return true;
  }

  function setView(view, focus, fromServer) {
    state.view = view;
    state.viewSettled = true;
    for (const tab of dom.tabs) {
      const selected = tab.dataset.view === view;
      tab.setAttribute("aria-selected", selected ? "true" : "false");
      tab.tabIndex = selected ? 0 : -1;
      if (selected) {
        dom.list.setAttribute("aria-labelledby", tab.id);
        if (focus) tab.focus();
      }
    }
    if (fromServer) return;
    state.conversations.clear();
    state.order = [];
    renderList();
    queryInbox();
  }

  function renderCounts() {
    for (const [view, node] of Object.entries(dom.counts)) node.textContent = String(state.counts[view] ?? 0);
  }

  function isUnread(summary) {
    const last = summary.last_message;
    if (!last || last.author_kind !== "shopper") return false;
    if (summary.id === state.selectedId) return false;
    return last.seq > (state.seen.get(summary.id) || 0);
  }

  function inboxItem(summary) {
    const last = summary.last_message;
    const prefix = last && last.author_kind !== "shopper" ? `${last.author_kind === "agent" ? gettext("Agent") : humanize(last.author_kind)}: ` : "";
    const button = h(
      "button",
      {
        type: "button",
        class: `inbox-item${summary.id === state.selectedId ? " inbox-item--active" : ""}${isUnread(summary) ? " inbox-item--unread" : ""}`,
        "data-testid": "inbox-item",
        "data-conversation-id": String(summary.id),
        "aria-current": summary.id === state.selectedId ? "true" : null,
        onclick: () => openConversation(summary.id),
      },
      [
        h("span", { class: "inbox-item__top" }, [
          h("span", { class: "inbox-item__name", text: shopperName(summary) }),
          h("time", { class: "inbox-item__time", text: ago((last && last.created_at) || summary.updated_at) }),
        ]),
        h("span", { class: "inbox-item__preview", text: last ? prefix + last.body : gettext("No messages yet") }),
        h("span", { class: "inbox-item__tags" }, [
          h("span", { class: `pill pill--${summary.state}`, text: STATE_LABELS[summary.state] || summary.state }),
          summary.channel === "email" ? h("span", { class: "pill pill--email", text: gettext("Email") }) : null,
          summary.snoozed ? h("span", { class: "pill pill--snoozed", text: summary.snoozed_until ? interpolate(gettext("Snoozed until %(time)s"), { time: formatTime(summary.snoozed_until) }) : gettext("Snoozed until reply") }) : null,
          ...(summary.labels || []).map((label) => h("span", { class: "pill pill--label", "data-testid": "inbox-label-pill", text: label })),
          summary.assigned_agent ? h("span", { class: "inbox-item__agent", text: summary.assigned_agent.id === ME.id ? gettext("You") : summary.assigned_agent.name }) : null,
        ]),
      ],
    );
    return h("li", {}, [button]);
  }

  function renderList() {
    const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest("[data-conversation-id]") : null;
    const focusedId = focused && dom.list.contains(focused) ? focused.dataset.conversationId : null;
    const nodes = state.order.map((id) => state.conversations.get(id)).filter(Boolean).map(inboxItem);
    dom.list.replaceChildren(...nodes);
    dom.listEmpty.hidden = nodes.length > 0;
    if (focusedId) {
      const again = dom.list.querySelector(`[data-conversation-id="${focusedId}"]`);
      if (again) again.focus();
    }
  }

  function upsertSummary(summary) {
    const known = state.conversations.has(summary.id);
    if (belongs(summary)) {
      state.conversations.set(summary.id, summary);
      if (!known) {
        if (state.view === "unassigned") state.order.push(summary.id);
        else state.order.unshift(summary.id);
      } else if (state.view !== "unassigned") {
        state.order = [summary.id, ...state.order.filter((id) => id !== summary.id)];
      }
    } else if (known) {
      state.conversations.delete(summary.id);
      state.order = state.order.filter((id) => id !== summary.id);
    }
    renderList();
    if (summary.id === state.selectedId) {
      state.selected = Object.assign({}, state.selected || {}, summary);
      renderHeader();
    }
  }

  // ---------------------------------------------------------------------------------------
  // The open conversation.
  function openConversation(id) {
    if (state.selectedId && state.selectedId !== id) {
      stopTyping();
      send({ type: "conversation.leave", conversation_id: state.selectedId });
    }
    state.selectedId = id;
    state.selected = state.conversations.get(id) || null;
    state.rendered.clear();
    state.maxSeq = 0;
    state.readSent = 0;
    dom.messages.replaceChildren();
    dom.contextSections.replaceChildren();
    dom.contextEmpty.hidden = false;
    dom.threadEmpty.hidden = true;
    dom.thread.hidden = false;
    document.body.dataset.pane = "thread"; // narrow screens show one pane (console.css)
    showTyping(null);
    renderHeader();
    renderList();
    send({ type: "conversation.open", conversation_id: id, ref: nextRef() });
    dom.input.focus();
  }

  function renderHeader() {
    const summary = state.selected;
    if (!summary) return;
    dom.title.textContent = shopperName(summary);
    const shopper = summary.shopper || {};
    const bits = [STATE_LABELS[summary.state] || summary.state];
    if (summary.assigned_agent) bits.push(summary.assigned_agent.id === ME.id ? "assigned to you" : `assigned to ${summary.assigned_agent.name}`);
    if (shopper.email) bits.push(shopper.email);
    if (summary.channel === "email") bits.push("email follow-up");
    const mine = summary.state === "assigned" && summary.assigned_agent && summary.assigned_agent.id === ME.id;
    const resolved = summary.state === "resolved";
    dom.assign.hidden = Boolean(mine) || resolved;
    dom.resolve.hidden = resolved;
    dom.transfer.hidden = resolved;
    dom.snooze.hidden = resolved || Boolean(summary.snoozed);
    dom.unsnooze.hidden = !summary.snoozed;
    if (summary.snoozed) bits.push(summary.snoozed_until ? interpolate(gettext("snoozed until %(time)s"), { time: formatTime(summary.snoozed_until, true) }) : gettext("snoozed until the shopper writes"));
    dom.subtitle.textContent = bits.join(" · ");
    renderLabels(summary.labels || []);
    renderTransferOptions();
  }

  function renderLabels(labels) {
    dom.labelList.replaceChildren(
      ...labels.map((label) =>
        h("span", { class: "pill pill--label", "data-testid": "label-pill" }, [
          label,
          h("button", {
            type: "button",
            class: "pill__remove",
            "aria-label": interpolate(gettext("Remove label %(label)s"), { label }),
            text: "×",
            onclick: () => send({ type: "conversation.label.remove", conversation_id: state.selectedId, label, ref: nextRef() }),
          }),
        ]),
      ),
    );
  }

  function snoozeUntil(choice) {
    const now = new Date();
    if (choice === "1h") return new Date(now.getTime() + 3600 * 1000).toISOString();
    if (choice === "tomorrow") {
      const tomorrow = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1, 9, 0, 0);
      return tomorrow.toISOString();
    }
    return null; // until the shopper writes
  }

  function authorName(message) {
    const author = message.author || {};
    if (author.kind === "shopper") return state.selected ? shopperName(state.selected) : gettext("Shopper");
    if (author.kind === "agent") return author.id === ME.id ? interpolate(gettext("%(name)s (you)"), { name: author.name || ME.name }) : author.name || gettext("Agent");
    if (author.kind === "bot") return author.name || gettext("Bot");
    return "";
  }

  function messageNode(message, pending) {
    const kind = (message.author && message.author.kind) || "system";
    const body = h("p", { class: "message__body", title: message.created_at ? formatTime(message.created_at, true) : null });
    body.textContent = String(message.body || ""); // plain text, always
    const meta = h("span", { class: "message__meta" }, [
      h("span", { class: "message__author", text: authorName(message) }),
      message.internal ? h("span", { class: "pill pill--note", text: gettext("Private note") }) : null,
      h("time", { datetime: message.created_at || "", text: message.created_at ? formatTime(message.created_at) : "" }),
      pending ? h("span", { class: "message__delivery", text: gettext("Sending…") }) : null,
    ]);
    return h(
      "li",
      {
        class: `message message--${kind}${message.internal ? " message--note" : ""}${pending ? " message--pending" : ""}`,
        "data-seq": pending ? null : String(message.seq),
        "data-client-id": pending ? message.client_id : null,
        "data-author": kind,
        "data-testid": "console-message",
      },
      [meta, body],
    );
  }

  function renderMessage(message) {
    if (!message || message.conversation_id !== state.selectedId || typeof message.seq !== "number") return false;
    if (message.client_id) {
      const pendingNode = dom.messages.querySelector(`[data-client-id="${CSS.escape(message.client_id)}"]`);
      if (pendingNode) pendingNode.remove();
    }
    if (state.rendered.has(message.seq)) return false;
    state.rendered.add(message.seq);
    const node = messageNode(message, false);
    let before = null;
    for (const child of dom.messages.children) {
      const seq = child.dataset.seq ? Number(child.dataset.seq) : null;
      if ((seq !== null && seq > message.seq) || child.classList.contains("message--pending")) {
        before = child;
        break;
      }
    }
    const nearBottom = dom.messages.scrollHeight - dom.messages.scrollTop - dom.messages.clientHeight < 80;
    dom.messages.insertBefore(node, before);
    if (message.seq > state.maxSeq) state.maxSeq = message.seq;
    if (nearBottom || (message.author && message.author.kind === "agent")) scrollToEnd();
    return true;
  }

  function addNotice(text) {
    dom.messages.append(h("li", { class: "notice", text }));
    scrollToEnd();
  }

  function scrollToEnd() {
    dom.messages.scrollTop = dom.messages.scrollHeight;
  }

  function markRead() {
    if (!state.selectedId || document.visibilityState !== "visible") return;
    state.seen.set(state.selectedId, Math.max(state.seen.get(state.selectedId) || 0, state.maxSeq));
    if (state.maxSeq > state.readSent && send({ type: "read", conversation_id: state.selectedId, seq: state.maxSeq })) {
      state.readSent = state.maxSeq;
    }
  }

  function showTyping(text) {
    clearTimeout(state.typingTimer);
    dom.typing.hidden = !text;
    dom.typing.textContent = text || "";
    if (text) state.typingTimer = setTimeout(() => showTyping(null), TYPING_SHOW_MS);
  }

  // ---------------------------------------------------------------------------------------
  // Context panel: sections are rendered generically, whatever app sent them.
  function renderValue(value) {
    if (value === null || value === undefined || value === "") return h("span", { class: "muted", text: "—" });
    if (typeof value === "boolean") return document.createTextNode(value ? gettext("Yes") : gettext("No"));
    if (typeof value === "string" && ISO_RE.test(value)) return h("time", { datetime: value, text: formatTime(value, true) });
    if (typeof value === "string" && /^https?:\/\//.test(value)) {
      const href = safeHref(value);
      if (href) return h("a", { href, target: "_blank", rel: "noopener noreferrer", text: value });
    }
    if (Array.isArray(value)) {
      if (value.every((item) => item && typeof item === "object" && !Array.isArray(item))) return renderItems(value);
      return document.createTextNode(value.map(String).join(", "));
    }
    if (typeof value === "object") return renderRows(value);
    return document.createTextNode(String(value));
  }

  function renderRows(data) {
    const list = h("dl", { class: "kv" });
    for (const [key, value] of Object.entries(data)) {
      list.append(h("dt", { text: humanize(key) }), h("dd", {}, [renderValue(value)]));
    }
    return list;
  }

  const PRIMARY_KEYS = ["title", "name", "number", "sku", "label", "id"];
  function renderItems(items) {
    if (!items.length) return h("p", { class: "muted", text: gettext("None") });
    const list = h("ul", { class: "items" });
    for (const item of items) {
      const primaryKey = PRIMARY_KEYS.find((key) => item[key] !== undefined && item[key] !== null && item[key] !== "");
      const href = item.url ? safeHref(item.url) : null;
      const primaryText = primaryKey ? `${primaryKey === "number" ? "#" : ""}${item[primaryKey]}` : gettext("Item");
      const primary = href
        ? h("a", { href, target: "_blank", rel: "noopener noreferrer", class: "items__title", text: primaryText })
        : h("span", { class: "items__title", text: primaryText });
      const details = [];
      for (const [key, value] of Object.entries(item)) {
        if (key === primaryKey || key === "url" || key === "image_url" || value === null || value === "") continue;
        if (typeof value === "object") continue;
        if (key === "currency") continue;
        let text = typeof value === "string" && ISO_RE.test(value) ? formatTime(value, true) : String(value);
        if ((key === "total" || key === "price") && item.currency) text = `${text} ${item.currency}`;
        details.push(text);
      }
      list.append(h("li", {}, [primary, details.length ? h("span", { class: "items__meta", text: details.join(" · ") }) : null]));
    }
    return list;
  }

  function sectionNode(section) {
    const body = [];
    if (section.error) body.push(h("p", { class: "muted", text: gettext("Unavailable right now.") }));
    else {
      const data = section.data || {};
      const entries = Object.entries(data);
      // A section whose data is one list (orders, items) shows the list itself.
      if (entries.length === 1 && Array.isArray(entries[0][1])) body.push(renderValue(entries[0][1]));
      else if (!entries.length) body.push(h("p", { class: "muted", text: gettext("Nothing yet.") }));
      else body.push(renderRows(data));
    }
    return h(
      "section",
      { class: "context-section", "data-section": section.key, "data-testid": `context-${section.key}`, "aria-label": section.title || humanize(section.key) },
      [h("h3", { text: section.title || humanize(section.key) }), ...body],
    );
  }

  function renderContext(sections) {
    dom.contextSections.replaceChildren(...(sections || []).map(sectionNode));
    dom.contextEmpty.hidden = Boolean(sections && sections.length);
  }

  function updateContextSection(section) {
    const node = sectionNode(section);
    const existing = dom.contextSections.querySelector(`[data-section="${CSS.escape(section.key)}"]`);
    if (existing) existing.replaceWith(node);
    else dom.contextSections.append(node);
    dom.contextEmpty.hidden = true;
    node.classList.add("context-section--flash");
    setTimeout(() => node.classList.remove("context-section--flash"), 1600);
  }

  // ---------------------------------------------------------------------------------------
  // Agents (transfer targets).
  async function loadAgents() {
    try {
      const response = await fetch(`${API}agents/`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const agents = await response.json();
      for (const agent of Array.isArray(agents) ? agents : agents.results || []) state.agents.set(agent.id, agent);
      renderTransferOptions();
    } catch (_) {
      /* the transfer menu stays with what presence frames told us */
    }
  }

  function renderTransferOptions() {
    const current = state.selected && state.selected.assigned_agent ? state.selected.assigned_agent.id : null;
    const options = [h("option", { value: "", text: gettext("Transfer to…") })];
    const agents = Array.from(state.agents.values()).filter((agent) => agent.id !== current);
    agents.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    for (const agent of agents) {
      const status = agent.status === "online" ? "online" : agent.status || "offline";
      const load = agent.capacity ? ` ${agent.load || 0}/${agent.capacity}` : "";
      options.push(h("option", { value: String(agent.id), text: `${agent.name}${agent.id === ME.id ? " (you)" : ""} — ${status}${load}` }));
    }
    dom.transfer.replaceChildren(...options);
    dom.transfer.value = "";
  }

  // ---------------------------------------------------------------------------------------
  // Frames from the server.
  const handlers = {
    "inbox.snapshot"(frame) {
      if (frame.counts) {
        state.counts = frame.counts;
        renderCounts();
      }
      if (!state.viewSettled && !frame.ref && frame.view) setView(frame.view, false, true);
      if (frame.view !== state.view) return;
      state.conversations.clear();
      state.order = [];
      for (const summary of frame.conversations || []) {
        state.conversations.set(summary.id, summary);
        state.order.push(summary.id);
      }
      renderList();
    },
    "inbox.update"(frame) {
      if (!frame.conversation) return;
      upsertSummary(frame.conversation);
      requeryLater();
    },
    "conversation.opened"(frame) {
      const summary = frame.conversation;
      if (!summary || summary.id !== state.selectedId) return;
      state.selected = summary;
      renderHeader();
      for (const message of frame.messages || []) renderMessage(message);
      if (Array.isArray(frame.context)) renderContext(frame.context);
      scrollToEnd();
      markRead();
      renderList();
    },
    "context.update"(frame) {
      if (frame.conversation_id === state.selectedId && frame.section) updateContextSection(frame.section);
    },
    "message.new"(frame) {
      const message = frame.message;
      if (!message) return;
      if (message.conversation_id === state.selectedId) {
        renderMessage(message);
        if (message.author && message.author.kind === "shopper") showTyping(null);
        markRead();
      }
      const summary = state.conversations.get(message.conversation_id);
      if (summary && !message.internal) {
        summary.last_message = { seq: message.seq, author_kind: message.author.kind, body: String(message.body).slice(0, 200), created_at: message.created_at };
        summary.last_seq = Math.max(summary.last_seq || 0, message.seq);
        renderList();
      }
      if (message.conversation_id !== state.selectedId && message.author && message.author.kind === "shopper" && document.visibilityState !== "visible") {
        document.title = "● New message · Patron Console";
      }
    },
    "message.ack"(frame) {
      state.pending.delete(frame.client_id);
      if (frame.message) renderMessage(frame.message);
      markRead();
    },
    typing(frame) {
      if (frame.conversation_id !== state.selectedId || !frame.author) return;
      if (frame.author.kind === "agent" && frame.author.id === ME.id) return;
      const name = frame.author.kind === "shopper" ? shopperName(state.selected) : frame.author.name || gettext("Someone");
      showTyping(frame.active ? `${name} is typing…` : null);
    },
    read() {},
    "conversation.state"(frame) {
      if (!frame.conversation) return;
      const summary = frame.conversation;
      upsertSummary(summary);
      requeryLater();
      // The server posts a system message for every change; nothing to add here.
    },
    assignment(frame) {
      if (frame.conversation_id !== state.selectedId || !state.selected) return;
      state.selected.assigned_agent = frame.agent || null;
      renderHeader();
    },
    "csat.recorded"(frame) {
      if (frame.conversation_id === state.selectedId) {
        addNotice(frame.comment ? interpolate(gettext("The shopper rated this conversation %(rating)s/5: “%(comment)s”"), frame) : interpolate(gettext("The shopper rated this conversation %(rating)s/5."), frame));
      } else {
        toast(`A shopper rated a conversation ${frame.rating}/5.`);
      }
    },
    "transcript.queued"(frame) {
      toast(frame.email ? interpolate(gettext("Transcript queued for %(email)s."), frame) : gettext("Transcript queued for the shopper."));
    },
    presence(frame) {
      const agent = frame.agent;
      if (!agent) return;
      state.agents.set(agent.id, Object.assign({}, state.agents.get(agent.id) || {}, agent, { status: frame.status, load: frame.load, capacity: frame.capacity }));
      if (agent.id === ME.id && (frame.status === "online" || frame.status === "away")) dom.presence.value = frame.status;
      renderTransferOptions();
    },
    "canned.list"(frame) {
      state.canned = Array.isArray(frame.responses) ? frame.responses : [];
    },
    error(frame) {
      if (frame.ref && state.pending.has(frame.ref)) {
        state.pending.delete(frame.ref);
        const node = dom.messages.querySelector(`[data-client-id="${CSS.escape(frame.ref)}"]`);
        if (node) {
          node.classList.remove("message--pending");
          node.classList.add("message--failed");
          const delivery = node.querySelector(".message__delivery");
          if (delivery) delivery.textContent = interpolate(gettext("Not sent: %(reason)s"), { reason: frame.message || frame.code });
        }
      }
      toast(frame.message || `Error: ${frame.code}`, "error");
    },
    pong() {},
  };

  // ---------------------------------------------------------------------------------------
  // Composer.
  function setMode(mode) {
    state.mode = mode;
    dom.composer.dataset.mode = mode;
    dom.modeReply.setAttribute("aria-checked", mode === "reply" ? "true" : "false");
    dom.modeNote.setAttribute("aria-checked", mode === "note" ? "true" : "false");
    dom.inputLabel.textContent = mode === "note" ? gettext("Private note (only agents see it)") : gettext("Reply to the shopper");
    dom.input.placeholder = mode === "note" ? gettext("Write a private note… only agents see it") : gettext("Type a reply… (type / for canned responses)");
    dom.send.textContent = mode === "note" ? gettext("Add note") : gettext("Send");
    if (mode === "note") stopTyping();
    dom.input.focus();
  }

  function sendComposer() {
    const body = dom.input.value.trim();
    if (!body || !state.selectedId) return;
    if (body.length > MAX_BODY) {
      toast(interpolate(gettext("Messages are limited to %(max)s characters."), { max: MAX_BODY }), "error");
      return;
    }
    const clientId = uuid();
    const internal = state.mode === "note";
    state.pending.set(clientId, { conversation_id: state.selectedId, body, internal });
    const node = messageNode(
      { author: { kind: "agent", id: ME.id, name: ME.name }, body, internal, client_id: clientId, created_at: new Date().toISOString() },
      true,
    );
    dom.messages.append(node);
    scrollToEnd();
    stopTyping();
    send({ type: "message.send", conversation_id: state.selectedId, client_id: clientId, body, internal, ref: clientId });
    dom.input.value = "";
    closeCanned();
  }

  function stopTyping() {
    if (state.typingActive && state.selectedId) send({ type: "typing", conversation_id: state.selectedId, active: false });
    state.typingActive = false;
  }

  function onInput() {
    updateCanned();
    if (state.mode !== "reply" || !state.selectedId) return;
    const text = dom.input.value.trim();
    if (!text || text.startsWith("/")) {
      stopTyping();
      return;
    }
    const now = Date.now();
    if (!state.typingActive || now - state.typingSentAt > TYPING_EVERY_MS) {
      if (send({ type: "typing", conversation_id: state.selectedId, active: true })) {
        state.typingActive = true;
        state.typingSentAt = now;
      }
    }
  }

  // Canned responses: "/" at the start of the composer, or the button.
  function updateCanned(force) {
    const value = dom.input.value;
    if (!force && !value.startsWith("/")) {
      closeCanned();
      return;
    }
    const query = value.startsWith("/") ? value.slice(1).toLowerCase() : "";
    state.cannedFiltered = state.canned.filter(
      (item) => !query || String(item.shortcut).toLowerCase().includes(query) || String(item.title).toLowerCase().includes(query),
    );
    state.cannedIndex = Math.min(state.cannedIndex, Math.max(0, state.cannedFiltered.length - 1));
    renderCanned();
  }

  function renderCanned() {
    const options = state.cannedFiltered.map((item, index) =>
      h(
        "div",
        {
          role: "option",
          id: `canned-${item.id}`,
          class: `canned__option${index === state.cannedIndex ? " canned__option--active" : ""}`,
          "aria-selected": index === state.cannedIndex ? "true" : "false",
          "data-testid": "canned-option",
          onmousedown: (event) => {
            event.preventDefault();
            applyCanned(item);
          },
        },
        [h("span", { class: "canned__shortcut", text: `/${item.shortcut}` }), h("span", { class: "canned__title", text: item.title }), h("span", { class: "canned__body", text: item.body })],
      ),
    );
    if (!options.length) options.push(h("div", { class: "canned__empty", text: state.canned.length ? gettext("No match") : gettext("No canned responses yet (add them in the admin).") }));
    dom.canned.replaceChildren(...options);
    dom.canned.hidden = false;
    dom.cannedButton.setAttribute("aria-expanded", "true");
    const active = state.cannedFiltered[state.cannedIndex];
    if (active) dom.input.setAttribute("aria-activedescendant", `canned-${active.id}`);
  }

  function closeCanned() {
    dom.canned.hidden = true;
    dom.cannedButton.setAttribute("aria-expanded", "false");
    dom.input.removeAttribute("aria-activedescendant");
    state.cannedIndex = 0;
  }

  function applyCanned(item) {
    dom.input.value = item.body;
    closeCanned();
    dom.input.focus();
    dom.input.setSelectionRange(dom.input.value.length, dom.input.value.length);
    onInput();
  }

  dom.input.addEventListener("input", onInput);
  dom.input.addEventListener("keydown", (event) => {
    if (!dom.canned.hidden && state.cannedFiltered.length) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const step = event.key === "ArrowDown" ? 1 : -1;
        state.cannedIndex = (state.cannedIndex + step + state.cannedFiltered.length) % state.cannedFiltered.length;
        renderCanned();
        return;
      }
      if (event.key === "Enter" || event.key === "Tab") {
        event.preventDefault();
        applyCanned(state.cannedFiltered[state.cannedIndex]);
        return;
      }
    }
    if (event.key === "Escape" && !dom.canned.hidden) {
      event.preventDefault();
      closeCanned();
      return;
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendComposer();
    }
  });
  dom.input.addEventListener("blur", () => setTimeout(closeCanned, 150));
  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendComposer();
  });
  dom.cannedButton.addEventListener("click", () => {
    if (!dom.canned.hidden) {
      closeCanned();
      return;
    }
    dom.input.focus();
    updateCanned(true);
  });
  $("back-button").addEventListener("click", () => {
    document.body.dataset.pane = "inbox";
    const item = dom.list.querySelector(`[data-conversation-id="${state.selectedId}"]`);
    if (item) item.focus();
  });
  dom.modeReply.addEventListener("click", () => setMode("reply"));
  dom.modeNote.addEventListener("click", () => setMode(state.mode === "note" ? "reply" : "note"));

  // ---------------------------------------------------------------------------------------
  // Conversation actions.
  dom.assign.addEventListener("click", () => {
    if (state.selectedId) send({ type: "conversation.assign", conversation_id: state.selectedId, ref: nextRef() });
  });
  dom.transfer.addEventListener("change", () => {
    const agentId = Number(dom.transfer.value);
    if (!agentId || !state.selectedId) return;
    const agent = state.agents.get(agentId);
    send({ type: "conversation.transfer", conversation_id: state.selectedId, agent_id: agentId, ref: nextRef() });
    toast(agent ? interpolate(gettext("Transferring to %(name)s…"), { name: agent.name }) : gettext("Transferring to another agent…"));
    dom.transfer.value = "";
  });
  dom.resolve.addEventListener("click", () => {
    if (state.selectedId) send({ type: "conversation.resolve", conversation_id: state.selectedId, ref: nextRef() });
  });
  dom.transcript.addEventListener("click", () => {
    if (!state.selectedId) return;
    const frame = { type: "transcript.send", conversation_id: state.selectedId, ref: nextRef() };
    const known = state.selected && state.selected.shopper && state.selected.shopper.email;
    if (!known) {
      const email = window.prompt(gettext("Send the transcript to which email address?"));
      if (!email) return;
      frame.email = email.trim();
    }
    send(frame);
  });
  dom.presence.addEventListener("change", () => send({ type: "presence.set", status: dom.presence.value }));
  dom.labelForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const label = dom.labelInput.value.trim();
    if (!label || !state.selectedId) return;
    send({ type: "conversation.label.add", conversation_id: state.selectedId, label, ref: nextRef() });
    dom.labelInput.value = "";
  });
  dom.snooze.addEventListener("change", () => {
    const choice = dom.snooze.value;
    dom.snooze.value = "";
    if (!choice || !state.selectedId) return;
    send({ type: "conversation.snooze", conversation_id: state.selectedId, until: snoozeUntil(choice), ref: nextRef() });
  });
  dom.unsnooze.addEventListener("click", () => {
    if (state.selectedId) send({ type: "conversation.unsnooze", conversation_id: state.selectedId, ref: nextRef() });
  });
  let labelTimer = null;
  dom.labelFilter.addEventListener("input", () => {
    clearTimeout(labelTimer);
    labelTimer = setTimeout(queryInbox, 250);
  });

  // ---------------------------------------------------------------------------------------
  // Inbox controls and keyboard.
  for (const tab of dom.tabs) tab.addEventListener("click", () => setView(tab.dataset.view));
  document.querySelector('[role="tablist"]').addEventListener("keydown", (event) => {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const index = dom.tabs.findIndex((tab) => tab.dataset.view === state.view);
    const next = dom.tabs[(index + (event.key === "ArrowRight" ? 1 : -1) + dom.tabs.length) % dom.tabs.length];
    setView(next.dataset.view, true);
  });
  let searchTimer = null;
  dom.search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(queryInbox, 250);
  });
  dom.stateFilter.addEventListener("change", queryInbox);

  function moveSelection(step) {
    if (!state.order.length) return;
    const index = state.order.indexOf(state.selectedId);
    const next = index < 0 ? 0 : Math.min(state.order.length - 1, Math.max(0, index + step));
    openConversation(state.order[next]);
    const item = dom.list.querySelector(`[data-conversation-id="${state.order[next]}"]`);
    if (item) item.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey && ["1", "2", "3", "4"].includes(event.key)) {
      event.preventDefault();
      setView(["unassigned", "mine", "all", "snoozed"][Number(event.key) - 1], true);
      return;
    }
    const target = event.target;
    const typing = target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "j") moveSelection(1);
    else if (event.key === "k") moveSelection(-1);
    else if (event.key === "r" && state.selectedId) {
      event.preventDefault();
      dom.input.focus();
    } else if (event.key === "/" && state.selectedId) {
      event.preventDefault();
      dom.input.focus();
      dom.input.value = "/";
      updateCanned();
    }
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      document.title = gettext("Inbox · Patron Console");
      markRead();
    }
  });
  // Relative times in the inbox age.
  setInterval(renderList, 30000);

  // The language switch (top bar) posts to Django's set_language, which sets the cookie.
  const languageSelect = document.getElementById("language-select");
  if (languageSelect) languageSelect.addEventListener("change", () => languageSelect.form.submit());

  loadAgents();
  connect();
})();
