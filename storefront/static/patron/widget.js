/*
 * Patron chat widget. Embed with one tag:
 *   <script src="https://patron.example/static/patron/widget.js" data-write-key="…" async></script>
 * Optional: data-customer-id + data-customer-hash (HMAC-SHA256 computed by the store's backend).
 *
 * Talks to /ws/chat/ on the origin it was loaded from (docs/chat-protocol.md). Every text a
 * shopper, a bot or an agent wrote is rendered with textContent / text nodes, never as HTML.
 * Vanilla ES2020, no dependencies, everything inside one open shadow root so the shop's CSS
 * and ours never meet.
 */
(async () => {
  "use strict";

  if (window.PatronChat || window.__patronChatLoading) return; // pasted twice: keep the first
  window.__patronChatLoading = true;

  const script =
    document.currentScript ||
    document.querySelector('script[src*="/patron/widget.js"][data-write-key]');
  if (!script || !script.src) return;

  const SRC = new URL(script.src, window.location.href);
  const ORIGIN = SRC.origin;
  const WS_URL = ORIGIN.replace(/^http/, "ws") + "/ws/chat/";
  const CSS_URL = new URL("widget.css", SRC).href;
  const WRITE_KEY = script.dataset.writeKey || "";
  const CUSTOMER_ID = script.dataset.customerId || "";
  const CUSTOMER_HASH = script.dataset.customerHash || "";
  const MAX_BODY = 4000;
  const PING_MS = 25000;
  const TYPING_EVERY_MS = 3000;
  const TYPING_SHOW_MS = 6000;

  if (!WRITE_KEY) {
    console.warn("Patron widget: data-write-key is missing on the script tag.");
    return;
  }

  // ---------------------------------------------------------------------------------------
  // Languages. The widget speaks the shop page's language (data-locale on the script tag, else
  // <html lang>, else the browser's), sends it in hello so the conversation speaks it too, and
  // takes its own labels from Patron's djangojs catalog for that language (widget-config's
  // "strings"; English when it cannot be fetched). gettext/interpolate follow Django's
  // JavaScriptCatalog, so makemessages -d djangojs finds every label.
  const LOCALE = (script.dataset.locale || document.documentElement.lang || navigator.language || "").slice(0, 16);
  let CATALOG = {};
  let CONFIG = null;
  try {
    const params = new URLSearchParams({ write_key: WRITE_KEY, locale: LOCALE });
    const response = await fetch(`${ORIGIN}/api/chat/widget-config/?${params}`, { credentials: "omit" });
    if (response.ok) {
      CONFIG = await response.json();
      CATALOG = (CONFIG && CONFIG.strings) || {};
    }
  } catch (_) {
    /* offline or refused by CORS: English labels */
  }
  function gettext(msgid) {
    const value = CATALOG[msgid];
    return typeof value === "string" && value ? value : msgid;
  }
  function interpolate(fmt, obj) {
    return fmt.replace(/%\(\w+\)s/g, (match) => String(obj[match.slice(2, -2)]));
  }

  // ---------------------------------------------------------------------------------------
  // Storage (localStorage may be unavailable: private modes, blocked third-party storage).
  const KEYS = {
    token: "patron.chat.token",
    anonymousId: "patron.anonymous_id",
    conversationId: "patron.chat.conversation_id",
    lastSeq: "patron.chat.last_seq",
    identity: "patron.chat.identity",
    open: "patron.chat.open",
    pending: "patron.chat.pending",
    csatDone: "patron.chat.csat_done",
    offlineDone: "patron.chat.offline_done",
  };
  const memory = new Map();
  const store = {
    get(key) {
      try {
        return window.localStorage.getItem(key);
      } catch (_) {
        return memory.has(key) ? memory.get(key) : null;
      }
    },
    set(key, value) {
      try {
        window.localStorage.setItem(key, String(value));
      } catch (_) {
        memory.set(key, String(value));
      }
    },
    remove(key) {
      try {
        window.localStorage.removeItem(key);
      } catch (_) {
        memory.delete(key);
      }
    },
  };

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function anonymousId() {
    // Prefer analytics.js's id so chat and tracking name the same visitor.
    try {
      const ajs = window.analytics && window.analytics.user && window.analytics.user();
      const id = ajs && typeof ajs.anonymousId === "function" && ajs.anonymousId();
      if (id) return String(id);
    } catch (_) {
      /* analytics.js not ready: fall through */
    }
    const raw = store.get("ajs_anonymous_id");
    if (raw) {
      try {
        const parsed = JSON.parse(raw);
        if (typeof parsed === "string" && parsed) return parsed;
      } catch (_) {
        if (raw) return raw;
      }
    }
    let id = store.get(KEYS.anonymousId);
    if (!id) {
      id = uuid();
      store.set(KEYS.anonymousId, id);
    }
    return id;
  }

  // A different logged-in customer (or a logout) means the stored conversation is not theirs.
  if ((store.get(KEYS.identity) || "") !== CUSTOMER_ID) {
    [KEYS.token, KEYS.conversationId, KEYS.lastSeq, KEYS.pending, KEYS.csatDone, KEYS.offlineDone].forEach(
      (key) => store.remove(key),
    );
    store.set(KEYS.identity, CUSTOMER_ID);
  }

  // ---------------------------------------------------------------------------------------
  // DOM helpers: text only.
  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children || []) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(pathData, size) {
    const NS = "http://www.w3.org/2000/svg";
    const node = document.createElementNS(NS, "svg");
    node.setAttribute("viewBox", "0 0 24 24");
    node.setAttribute("width", String(size || 24));
    node.setAttribute("height", String(size || 24));
    node.setAttribute("aria-hidden", "true");
    node.setAttribute("focusable", "false");
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", pathData);
    path.setAttribute("fill", "currentColor");
    node.append(path);
    return node;
  }

  const ICON_CHAT =
    "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2zm3 6v2h2v-2H7zm4 0v2h2v-2h-2zm4 0v2h2v-2h-2z";
  const ICON_CLOSE =
    "M18.3 5.7 12 12l6.3 6.3-1.4 1.4L10.6 13.4 4.3 19.7 2.9 18.3 9.2 12 2.9 5.7 4.3 4.3l6.3 6.3 6.3-6.3z";
  const ICON_SEND = "M3 20.5 21 12 3 3.5V10l12 2-12 2z";

  function timeLabel(iso) {
    const date = iso ? new Date(iso) : new Date();
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // ---------------------------------------------------------------------------------------
  // The UI.
  const host = h("div", { id: "patron-chat-root", "data-patron-widget": "" });
  // Inline, so no rule of the shop's page can move or hide the widget's box.
  host.style.cssText =
    "position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; visibility: hidden; margin: 0; padding: 0;";
  const root = host.attachShadow({ mode: "open" });
  const stylesheet = h("link", { rel: "stylesheet", href: CSS_URL });
  stylesheet.addEventListener("load", () => {
    host.style.visibility = "visible";
  });
  stylesheet.addEventListener("error", () => {
    host.style.visibility = "visible";
  });

  const ui = {};
  ui.badge = h("span", { class: "badge", hidden: true, "data-testid": "patron-unread" });
  ui.launcher = h(
    "button",
    {
      type: "button",
      class: "launcher",
      "aria-label": gettext("Open chat"),
      "aria-expanded": "false",
      "aria-controls": "patron-panel",
      "data-testid": "patron-launcher",
      onclick: () => (state.open ? closePanel() : openPanel({ focus: true })),
    },
    [h("span", { class: "launcher__chat" }, [svg(ICON_CHAT, 28)]), h("span", { class: "launcher__close" }, [svg(ICON_CLOSE, 22)]), ui.badge],
  );

  ui.title = h("h2", { class: "title", id: "patron-title", text: gettext("Chat with us") });
  ui.status = h("p", { class: "status", "data-testid": "patron-status", text: gettext("We usually reply in a few minutes") });
  ui.avatar = h("span", { class: "avatar", "aria-hidden": "true", text: "P" });
  ui.close = h(
    "button",
    { type: "button", class: "icon-button", "aria-label": gettext("Close chat"), onclick: () => closePanel() },
    [svg(ICON_CLOSE, 18)],
  );
  ui.connection = h("p", { class: "connection", hidden: true, role: "status", "data-testid": "patron-connection" });
  ui.queue = h("p", { class: "queue", hidden: true, role: "status", "data-testid": "patron-queue" });

  ui.log = h("ol", {
    class: "log",
    role: "log",
    "aria-live": "polite",
    "aria-label": gettext("Messages"),
    "data-testid": "patron-messages",
  });
  ui.typing = h("p", { class: "typing", hidden: true, "aria-live": "polite", "data-testid": "patron-typing" });

  // Offline form: outside business hours a hand-off becomes an email follow-up.
  ui.offlineText = h("p", { class: "card-text" });
  ui.offlineEmail = h("input", { type: "email", id: "patron-offline-email", required: true, autocomplete: "email" });
  ui.offlineBody = h("textarea", { id: "patron-offline-body", rows: "3", required: true, maxlength: String(MAX_BODY) });
  ui.offline = h(
    "form",
    { class: "card", hidden: true, "data-testid": "patron-offline-form", "aria-label": gettext("Leave us a message"), onsubmit: onOfflineSubmit },
    [
      ui.offlineText,
      h("label", { for: "patron-offline-email", text: gettext("Your email") }),
      ui.offlineEmail,
      h("label", { for: "patron-offline-body", text: gettext("Your message") }),
      ui.offlineBody,
      h("button", { type: "submit", class: "primary", text: gettext("Send message") }),
    ],
  );

  // CSAT after resolve.
  ui.csatStars = [1, 2, 3, 4, 5].map((rating) =>
    h(
      "button",
      {
        type: "button",
        class: "star",
        "aria-label": interpolate(gettext("Rate %(rating)s out of 5"), { rating }),
        "aria-pressed": "false",
        "data-rating": String(rating),
        onclick: () => selectRating(rating),
      },
      ["★"],
    ),
  );
  ui.csatComment = h("textarea", { id: "patron-csat-comment", rows: "2", maxlength: "1000", placeholder: gettext("Anything we could do better? (optional)") });
  ui.csatSubmit = h("button", { type: "submit", class: "primary", disabled: true, text: gettext("Send rating") });
  ui.csat = h(
    "form",
    { class: "card", hidden: true, "data-testid": "patron-csat", "aria-label": gettext("Rate this conversation"), onsubmit: onCsatSubmit },
    [
      h("p", { class: "card-title", text: gettext("How did we do?") }),
      h("div", { class: "stars", role: "group", "aria-label": gettext("Rating") }, ui.csatStars),
      h("label", { for: "patron-csat-comment", class: "sr-only", text: gettext("Comment") }),
      ui.csatComment,
      ui.csatSubmit,
    ],
  );

  // Transcript by email.
  ui.transcriptEmail = h("input", { type: "email", id: "patron-transcript-email", autocomplete: "email", placeholder: "you@example.com" });
  ui.transcript = h(
    "form",
    { class: "card", hidden: true, "aria-label": gettext("Email me this conversation"), onsubmit: onTranscriptSubmit },
    [
      h("label", { for: "patron-transcript-email", text: gettext("Send a copy of this chat to") }),
      h("div", { class: "row" }, [ui.transcriptEmail, h("button", { type: "submit", class: "primary", text: gettext("Send") })]),
    ],
  );

  ui.handoff = h("button", {
    type: "button",
    class: "chip",
    "data-testid": "patron-handoff",
    text: gettext("Talk to a person"),
    onclick: () => requestHandoff(),
  });
  ui.transcriptToggle = h("button", {
    type: "button",
    class: "chip chip--quiet",
    hidden: true,
    text: gettext("Email transcript"),
    onclick: () => {
      ui.transcript.hidden = !ui.transcript.hidden;
      if (!ui.transcript.hidden) ui.transcriptEmail.focus();
    },
  });
  ui.actions = h("div", { class: "actions" }, [ui.handoff, ui.transcriptToggle]);

  ui.input = h("textarea", {
    id: "patron-input",
    class: "input",
    rows: "1",
    maxlength: String(MAX_BODY),
    placeholder: gettext("Write a message…"),
    "aria-label": gettext("Message"),
    "data-testid": "patron-input",
    oninput: onComposerInput,
    onkeydown: onComposerKeydown,
  });
  ui.send = h("button", { type: "submit", class: "send", "aria-label": gettext("Send"), "data-testid": "patron-send" }, [svg(ICON_SEND, 20)]);
  ui.composer = h("form", { class: "composer", onsubmit: onComposerSubmit }, [ui.input, ui.send]);

  ui.panel = h(
    "section",
    {
      id: "patron-panel",
      class: "panel",
      role: "dialog",
      "aria-labelledby": "patron-title",
      hidden: true,
      "data-testid": "patron-panel",
      onkeydown: (event) => {
        if (event.key === "Escape") closePanel();
      },
    },
    [
      h("header", { class: "header" }, [ui.avatar, h("div", { class: "heading" }, [ui.title, ui.status]), ui.close]),
      ui.connection,
      ui.queue,
      ui.log,
      ui.typing,
      ui.offline,
      ui.csat,
      ui.transcript,
      ui.actions,
      ui.composer,
      h("p", { class: "footer", text: gettext("Powered by Patron") }),
    ],
  );

  root.append(stylesheet, ui.panel, ui.launcher);

  // ---------------------------------------------------------------------------------------
  // State.
  const state = {
    open: store.get(KEYS.open) === "1",
    socket: null,
    ready: false, // welcome received on the current socket
    wanted: false, // the shopper chats: keep a socket up
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    conversation: null,
    conversationId: Number(store.get(KEYS.conversationId)) || null,
    maxSeq: 0, // highest seq rendered on this page
    seenSeq: Number(store.get(KEYS.lastSeq)) || 0, // highest seq the shopper has seen (any page)
    readSent: 0,
    unread: 0,
    rendered: new Set(),
    pending: loadPending(),
    typingSentAt: 0,
    typingActive: false,
    typingTimer: null,
    helloHadToken: false,
    handoffQueued: false,
    settings: null,
    // widget-config's greeting, already in the page's language, until welcome brings its own.
    greeting: (CONFIG && CONFIG.greeting) || null,
    csatRating: 0,
    sentPage: "",
  };

  function loadPending() {
    try {
      const list = JSON.parse(store.get(KEYS.pending) || "[]");
      return Array.isArray(list) ? list.filter((p) => p && p.client_id && typeof p.body === "string") : [];
    } catch (_) {
      return [];
    }
  }

  function savePending() {
    if (state.pending.length) store.set(KEYS.pending, JSON.stringify(state.pending.map(({ client_id, body }) => ({ client_id, body }))));
    else store.remove(KEYS.pending);
  }

  // ---------------------------------------------------------------------------------------
  // Socket.
  function send(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN && state.ready) {
      state.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function currentPage() {
    return { url: window.location.href.slice(0, 2000), title: (document.title || "").slice(0, 300) };
  }

  function connect() {
    state.wanted = true;
    if (state.socket && state.socket.readyState <= WebSocket.OPEN) return;
    clearTimeout(state.reconnectTimer);
    state.ready = false;
    setConnection(state.attempt > 0 ? gettext("Reconnecting…") : gettext("Connecting…"));
    let socket;
    try {
      socket = new WebSocket(WS_URL);
    } catch (_) {
      scheduleReconnect();
      return;
    }
    state.socket = socket;
    socket.addEventListener("open", () => {
      const hello = { type: "hello", write_key: WRITE_KEY, page: currentPage() };
      const token = store.get(KEYS.token);
      if (token) hello.token = token;
      state.helloHadToken = Boolean(token);
      hello.anonymous_id = anonymousId();
      if (CUSTOMER_ID) {
        hello.customer_id = CUSTOMER_ID;
        hello.customer_hash = CUSTOMER_HASH;
      }
      if (LOCALE) hello.locale = LOCALE;
      if (state.conversationId) {
        hello.conversation_id = state.conversationId;
        // Within one page we resume after what is on screen; a fresh page load asks for the
        // history (the DOM is empty), so last_seq is only sent once something is rendered.
        if (state.maxSeq > 0) hello.last_seq = state.maxSeq;
      }
      state.sentPage = hello.page.url;
      socket.send(JSON.stringify(hello));
    });
    socket.addEventListener("message", (event) => {
      if (socket !== state.socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      if (frame && typeof frame.type === "string") handle(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== state.socket) return;
      state.socket = null;
      state.ready = false;
      clearInterval(state.pingTimer);
      onClosed(event.code);
    });
  }

  function onClosed(code) {
    if (code === 4003) {
      forgetConversation();
      store.remove(KEYS.token);
      state.attempt = 0;
      if (state.helloHadToken && state.wanted) {
        // The token no longer verifies (or names another shopper): start over as a new visitor.
        state.reconnectTimer = setTimeout(connect, 250);
      } else {
        // Refused without a token: a wrong write key or customer hash. Retrying cannot help.
        state.wanted = false;
        setConnection(gettext("Chat is unavailable on this site right now."));
      }
      return;
    }
    if (code === 4000 || code === 4009) {
      // The server refused a frame; never re-send it as is.
      state.pending.forEach((p) => markFailed(p.client_id));
      state.pending = [];
      savePending();
    }
    if (state.wanted) scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    const base = Math.min(10, 0.5 * 2 ** state.attempt);
    const delay = base * (0.8 + Math.random() * 0.4) * 1000;
    state.attempt += 1;
    setConnection(gettext("Connection lost. Reconnecting…"));
    state.reconnectTimer = setTimeout(connect, delay);
  }

  window.addEventListener("online", () => {
    if (state.wanted && !state.socket) {
      state.attempt = 0;
      connect();
    }
  });

  function forgetConversation() {
    state.conversation = null;
    state.conversationId = null;
    state.maxSeq = 0;
    state.seenSeq = 0;
    state.readSent = 0;
    state.rendered.clear();
    store.remove(KEYS.conversationId);
    store.remove(KEYS.lastSeq);
    ui.log.replaceChildren();
    renderGreeting();
    renderState();
  }

  // ---------------------------------------------------------------------------------------
  // Frames from the server.
  const handlers = {
    welcome(frame) {
      state.ready = true;
      state.attempt = 0;
      setConnection(null);
      if (frame.token) store.set(KEYS.token, frame.token);
      state.settings = frame.settings || null;
      if (state.settings && state.settings.greeting) state.greeting = state.settings.greeting;
      const conversation = frame.conversation || null;
      if (!conversation || conversation.id !== state.conversationId) {
        // Another (or no) conversation than the one on screen: render from scratch.
        state.rendered.clear();
        state.maxSeq = 0;
        ui.log.replaceChildren();
        if (!conversation) {
          store.remove(KEYS.conversationId);
          state.conversationId = null;
        }
      }
      if (conversation) setConversation(conversation);
      renderGreeting();
      const messages = Array.isArray(frame.messages) ? frame.messages : [];
      messages.forEach((message) => renderMessage(message));
      // Still queued after a reload: the banner comes back with the place in the queue.
      if (conversation) renderQueue(conversation.queue_position, conversation.agents_online);
      // Unread: messages from others the shopper has not seen on any page yet.
      state.unread = messages.filter((m) => m.seq > state.seenSeq && m.author && m.author.kind !== "shopper").length;
      renderBadge();
      renderState();
      resendPending();
      if (state.handoffQueued) {
        state.handoffQueued = false;
        send({ type: "handoff.request", ref: "handoff" });
      }
      state.pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
      markRead();
      if (conversation && conversation.state === "resolved" && conversation.csat_requested) maybeShowCsat();
    },
    "message.ack"(frame) {
      const index = state.pending.findIndex((p) => p.client_id === frame.client_id);
      if (index >= 0) {
        state.pending.splice(index, 1);
        savePending();
      }
      const node = ui.log.querySelector(`[data-client-id="${cssEscape(frame.client_id)}"]`);
      if (node) node.remove();
      if (frame.message) {
        if (!state.conversationId) setConversation({ id: frame.message.conversation_id, state: "bot" });
        renderMessage(frame.message);
        markRead();
      }
    },
    "message.new"(frame) {
      const message = frame.message;
      if (!message || message.internal) return;
      if (!state.conversationId) setConversation({ id: message.conversation_id, state: "bot" });
      const fresh = renderMessage(message);
      if (!fresh) return;
      if (message.author && message.author.kind !== "shopper") {
        showTyping(null);
        if (state.open && document.visibilityState === "visible") markRead();
        else {
          state.unread += 1;
          renderBadge();
        }
      }
    },
    typing(frame) {
      if (!frame.author || frame.author.kind === "shopper") return;
      showTyping(frame.active ? frame.author.name || gettext("Someone") : null);
    },
    read() {
      /* read receipts are not shown to shoppers */
    },
    "conversation.state"(frame) {
      if (!frame.conversation) return;
      const before = state.conversation ? state.conversation.state : null;
      setConversation(frame.conversation);
      if (frame.conversation.state !== "resolved") {
        ui.csat.hidden = true;
      }
      if (before !== frame.conversation.state && frame.conversation.state !== "queued") ui.queue.hidden = true;
      if (frame.conversation.state === "queued") renderQueue(frame.conversation.queue_position, frame.conversation.agents_online);
      renderState();
    },
    assignment(frame) {
      if (!state.conversation) return;
      state.conversation.agent = frame.agent || null;
      renderState();
    },
    "queue.position"(frame) {
      if (state.conversation) {
        state.conversation.queue_position = Number(frame.position) || null;
        state.conversation.agents_online = typeof frame.agents_online === "number" ? frame.agents_online : null;
      }
      renderQueue(Number(frame.position) || null, frame.agents_online);
      renderState();
    },
    "offline.prompt"(frame) {
      showOfflineForm(frame.message);
    },
    "csat.request"() {
      maybeShowCsat(true);
    },
    "csat.recorded"(frame) {
      store.set(KEYS.csatDone, String(frame.conversation_id || state.conversationId));
      ui.csat.hidden = true;
      addNotice(gettext("Thanks for your feedback!"));
    },
    "transcript.queued"(frame) {
      ui.transcript.hidden = true;
      addNotice(frame.email ? interpolate(gettext("We'll email a copy of this chat to %(email)s."), { email: frame.email }) : gettext("We'll email you a copy of this chat."));
    },
    error(frame) {
      if (frame.ref) markFailed(frame.ref, frame.message);
      if (frame.code === "rate_limited") addNotice(gettext("You're sending messages too quickly. Please wait a moment."));
      else if (frame.code === "conflict" && !frame.ref) addNotice(frame.message || gettext("That was already done."));
      else if (!frame.ref && frame.code !== "forbidden" && frame.code !== "hello_required") addNotice(frame.message || gettext("Something went wrong."));
    },
    pong() {},
  };

  function handle(frame) {
    const handler = handlers[frame.type];
    if (handler) handler(frame);
  }

  function setConversation(conversation) {
    const same = state.conversation && state.conversation.id === conversation.id;
    state.conversation = Object.assign({}, same ? state.conversation : {}, conversation);
    if (state.conversationId !== conversation.id) {
      state.conversationId = conversation.id;
      store.set(KEYS.conversationId, String(conversation.id));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Rendering.
  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(String(value)) : String(value).replace(/[^A-Za-z0-9_-]/g, "");
  }

  function authorLabel(author) {
    if (!author) return "";
    if (author.kind === "bot") return author.name || gettext("Assistant");
    if (author.kind === "agent") return author.name || gettext("Agent");
    return "";
  }

  function messageNode({ kind, name, body, time, seq, clientId, pending }) {
    const bubble = h("p", { class: "bubble" });
    bubble.textContent = body; // plain text, always
    const meta = h("span", { class: "meta" }, [
      name ? h("span", { class: "author", text: name }) : null,
      h("time", { text: time }),
      pending ? h("span", { class: "delivery", text: gettext("Sending…") }) : null,
    ]);
    return h(
      "li",
      {
        class: `message message--${kind}${pending ? " message--pending" : ""}`,
        "data-seq": seq === undefined ? null : String(seq),
        "data-client-id": clientId || null,
        "data-author": kind,
        "data-testid": "patron-message",
      },
      [bubble, meta],
    );
  }

  function renderMessage(message) {
    if (!message || typeof message.seq !== "number" || message.internal) return false;
    if (state.rendered.has(message.seq)) return false; // resume is exactly-once; this is belt and braces
    state.rendered.add(message.seq);
    if (message.client_id) dropPending(message.client_id);
    const kind = (message.author && message.author.kind) || "system";
    const node = messageNode({
      kind,
      name: kind === "shopper" ? "" : authorLabel(message.author),
      body: String(message.body || ""),
      time: timeLabel(message.created_at),
      seq: message.seq,
      clientId: null,
    });
    // Keep seq order; unacknowledged messages stay at the bottom.
    let before = null;
    for (const child of ui.log.children) {
      const childSeq = child.dataset.seq ? Number(child.dataset.seq) : null;
      if ((childSeq !== null && childSeq > message.seq) || child.classList.contains("message--pending")) {
        before = child;
        break;
      }
    }
    ui.log.insertBefore(node, before);
    if (message.seq > state.maxSeq) state.maxSeq = message.seq;
    removeGreeting();
    scrollToEnd();
    return true;
  }

  function renderPending(pending) {
    const node = messageNode({ kind: "shopper", body: pending.body, time: timeLabel(), clientId: pending.client_id, pending: true });
    ui.log.append(node);
    removeGreeting();
    scrollToEnd();
  }

  function dropPending(clientId) {
    const node = ui.log.querySelector(`[data-client-id="${cssEscape(clientId)}"]`);
    if (node) node.remove();
    const index = state.pending.findIndex((p) => p.client_id === clientId);
    if (index >= 0) {
      state.pending.splice(index, 1);
      savePending();
    }
  }

  function markFailed(clientId, reason) {
    const node = ui.log.querySelector(`[data-client-id="${cssEscape(clientId)}"]`);
    if (!node) return;
    node.classList.remove("message--pending");
    node.classList.add("message--failed");
    const delivery = node.querySelector(".delivery") || h("span", { class: "delivery" });
    delivery.textContent = reason ? interpolate(gettext("Not sent: %(reason)s"), { reason }) : gettext("Not sent");
    node.querySelector(".meta").append(delivery);
    const index = state.pending.findIndex((p) => p.client_id === clientId);
    if (index >= 0) {
      state.pending.splice(index, 1);
      savePending();
    }
  }

  function renderGreeting() {
    if (state.rendered.size || ui.log.querySelector(".message--pending") || ui.log.querySelector(".greeting")) return;
    const text = state.greeting || gettext("Hi! How can we help you today?");
    const node = messageNode({ kind: "bot", name: "", body: text, time: "" });
    node.classList.add("greeting");
    node.removeAttribute("data-testid");
    ui.log.prepend(node);
  }

  function removeGreeting() {
    const greeting = ui.log.querySelector(".greeting");
    if (greeting) greeting.remove();
  }

  function addNotice(text) {
    const node = h("li", { class: "notice", role: "status" });
    node.textContent = text;
    ui.log.append(node);
    scrollToEnd();
  }

  function scrollToEnd() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function renderBadge() {
    ui.badge.textContent = state.unread > 9 ? "9+" : String(state.unread);
    ui.badge.hidden = state.open || state.unread === 0;
    ui.launcher.setAttribute("aria-label", state.unread && !state.open ? interpolate(gettext("Open chat, unread: %(count)s"), { count: state.unread }) : state.open ? gettext("Close chat") : gettext("Open chat"));
  }

  function setConnection(text) {
    ui.connection.hidden = !text || !state.open;
    ui.connection.textContent = text || "";
  }

  function renderState() {
    const conversation = state.conversation;
    const current = conversation ? conversation.state : null;
    const agent = conversation && conversation.agent && conversation.agent.name;
    let status = gettext("Our assistant answers right away");
    if (current === "queued" && conversation.channel === "email") status = gettext("We'll reply by email");
    else if (current === "queued" && conversation.agents_online === 0) status = gettext("No one is online right now");
    else if (current === "queued") status = gettext("Waiting for the next available person");
    else if (current === "assigned") status = agent ? interpolate(gettext("You're chatting with %(agent)s"), { agent }) : gettext("You're chatting with our team");
    else if (current === "resolved") status = gettext("Conversation closed · write to reopen");
    else if (state.settings && state.settings.business_hours_open === false) status = gettext("We're offline. Leave a message.");
    ui.status.textContent = status;
    ui.avatar.textContent = current === "assigned" && agent ? agent.trim().charAt(0).toUpperCase() || "P" : "P";
    ui.panel.dataset.state = current || "new";
    ui.handoff.hidden = !(current === null || current === "bot") || !ui.offline.hidden;
    ui.transcriptToggle.hidden = !state.conversationId;
    if (current !== "queued") ui.queue.hidden = true;
    if (current === "assigned") ui.offline.hidden = true; // somebody is here after all
    // Queued outside business hours or with nobody online: nobody will answer live, so ask for
    // an email. (The offline.prompt frame says so at the hand-off; after a page load only the
    // state does.)
    const nobody = conversation && (conversation.business_hours_open === false || conversation.agents_online === 0);
    if (current === "queued" && conversation.channel !== "email" && nobody) showOfflineForm(null);
  }

  // The queue banner: the shopper's place, and an honest word when nobody is online. Showing
  // it shrinks the message log, so the newest message is scrolled back into view.
  function renderQueue(position, agentsOnline) {
    const queued = state.conversation && state.conversation.state === "queued" && state.conversation.channel !== "email";
    const nearBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
    if (!position || !queued) {
      ui.queue.hidden = true;
    } else if (agentsOnline === 0) {
      ui.queue.textContent = gettext("No one from our team is online right now. Leave your email below and we'll reply by email.");
      ui.queue.hidden = false;
    } else {
      ui.queue.textContent =
        position === 1 ? gettext("You're next in line. An agent will be with you shortly.") : interpolate(gettext("You're number %(position)s in line."), { position });
      ui.queue.hidden = false;
    }
    ui.queue.dataset.agentsOnline = agentsOnline === undefined || agentsOnline === null ? "" : String(agentsOnline);
    if (nearBottom) scrollToEnd();
  }

  function showOfflineForm(message) {
    if (!ui.offline.hidden) return;
    if (state.conversationId && store.get(KEYS.offlineDone) === String(state.conversationId)) return;
    const nobodyOnline = state.conversation && state.conversation.business_hours_open !== false && state.conversation.agents_online === 0;
    ui.offlineText.textContent =
      message ||
      (nobodyOnline
        ? gettext("No one from our team is online right now. Leave your email and your question, and we'll reply by email.")
        : gettext("We're offline right now. Leave your email and we'll reply by email."));
    ui.offline.hidden = false;
    ui.handoff.hidden = true;
    if (!state.open) openPanel();
    if (ui.panel.contains(root.activeElement)) ui.offlineEmail.focus();
    scrollToEnd();
  }

  function showTyping(name) {
    clearTimeout(state.typingTimer);
    if (!name) {
      ui.typing.hidden = true;
      ui.typing.textContent = "";
      return;
    }
    ui.typing.textContent = interpolate(gettext("%(name)s is typing…"), { name });
    ui.typing.hidden = false;
    state.typingTimer = setTimeout(() => showTyping(null), TYPING_SHOW_MS);
  }

  // ---------------------------------------------------------------------------------------
  // Shopper actions.
  function openPanel(options) {
    state.open = true;
    store.set(KEYS.open, "1");
    ui.panel.hidden = false;
    ui.launcher.setAttribute("aria-expanded", "true");
    ui.launcher.classList.add("launcher--open");
    state.unread = 0;
    renderBadge();
    renderGreeting();
    renderState();
    if (!state.ready) setConnection(state.attempt > 0 ? gettext("Reconnecting…") : gettext("Connecting…"));
    connect();
    markRead();
    scrollToEnd();
    // Only a click moves focus: a panel left open on the previous page must not steal it.
    if (options && options.focus) ui.input.focus();
  }

  function closePanel() {
    state.open = false;
    store.set(KEYS.open, "0");
    ui.panel.hidden = true;
    ui.launcher.setAttribute("aria-expanded", "false");
    ui.launcher.classList.remove("launcher--open");
    stopTyping();
    renderBadge();
    ui.launcher.focus();
  }

  function markRead() {
    if (!state.open || state.maxSeq <= state.readSent) return;
    if (send({ type: "read", seq: state.maxSeq })) state.readSent = state.maxSeq;
    if (state.maxSeq > state.seenSeq) {
      state.seenSeq = state.maxSeq;
      store.set(KEYS.lastSeq, String(state.maxSeq));
    }
  }

  function sendMessage(body) {
    const pending = { client_id: uuid(), body };
    state.pending.push(pending);
    savePending();
    renderPending(pending);
    send({ type: "message.send", client_id: pending.client_id, body, ref: pending.client_id });
    connect();
  }

  function resendPending() {
    for (const pending of state.pending) {
      if (!ui.log.querySelector(`[data-client-id="${cssEscape(pending.client_id)}"]`)) renderPending(pending);
      send({ type: "message.send", client_id: pending.client_id, body: pending.body, ref: pending.client_id });
    }
  }

  function onComposerSubmit(event) {
    event.preventDefault();
    const body = ui.input.value.trim();
    if (!body) return;
    if (body.length > MAX_BODY) {
      addNotice(interpolate(gettext("Messages are limited to %(max)s characters."), { max: MAX_BODY }));
      return;
    }
    ui.input.value = "";
    autosize();
    stopTyping();
    sendMessage(body);
    ui.input.focus();
  }

  function onComposerKeydown(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  }

  function onComposerInput() {
    autosize();
    const hasText = ui.input.value.trim().length > 0;
    if (!hasText) {
      stopTyping();
      return;
    }
    const now = Date.now();
    if (!state.typingActive || now - state.typingSentAt > TYPING_EVERY_MS) {
      if (state.conversationId && send({ type: "typing", active: true })) {
        state.typingActive = true;
        state.typingSentAt = now;
      }
    }
  }

  function stopTyping() {
    if (state.typingActive) send({ type: "typing", active: false });
    state.typingActive = false;
  }

  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 120)}px`;
  }

  function requestHandoff() {
    // The server starts a conversation when there is none yet (docs/chat-protocol.md).
    ui.handoff.hidden = true;
    if (!send({ type: "handoff.request", ref: "handoff" })) {
      state.handoffQueued = true;
      connect();
    }
  }

  function maybeShowCsat(force) {
    const done = store.get(KEYS.csatDone);
    if (!force && done && String(done) === String(state.conversationId)) return;
    if (done && String(done) === String(state.conversationId)) return;
    state.csatRating = 0;
    ui.csatStars.forEach((star) => star.setAttribute("aria-pressed", "false"));
    ui.csatSubmit.disabled = true;
    ui.csatComment.value = "";
    ui.csat.hidden = false;
    scrollToEnd();
  }

  function selectRating(rating) {
    state.csatRating = rating;
    ui.csatStars.forEach((star) => {
      const value = Number(star.dataset.rating);
      star.setAttribute("aria-pressed", value === rating ? "true" : "false");
      star.classList.toggle("star--on", value <= rating);
    });
    ui.csatSubmit.disabled = false;
  }

  function onCsatSubmit(event) {
    event.preventDefault();
    if (!state.csatRating) return;
    const frame = { type: "csat.submit", rating: state.csatRating, ref: "csat" };
    const comment = ui.csatComment.value.trim();
    if (comment) frame.comment = comment.slice(0, 1000);
    if (!send(frame)) addNotice(gettext("Still connecting… please try again in a moment."));
  }

  function onOfflineSubmit(event) {
    event.preventDefault();
    const email = ui.offlineEmail.value.trim();
    const body = ui.offlineBody.value.trim();
    if (!email || !body) return;
    const frame = { type: "offline.submit", email, body: body.slice(0, MAX_BODY), client_id: uuid(), ref: "offline" };
    if (send(frame)) {
      if (state.conversationId) store.set(KEYS.offlineDone, String(state.conversationId));
      ui.offline.hidden = true;
      ui.offlineBody.value = "";
      addNotice(interpolate(gettext("Thanks! We'll reply to %(email)s by email."), { email }));
    } else {
      addNotice(gettext("Still connecting… please try again in a moment."));
    }
  }

  function onTranscriptSubmit(event) {
    event.preventDefault();
    const email = ui.transcriptEmail.value.trim();
    const frame = { type: "transcript.request", ref: "transcript" };
    if (email) frame.email = email;
    if (!send(frame)) addNotice(gettext("Still connecting… please try again in a moment."));
  }

  // ---------------------------------------------------------------------------------------
  // Page views: on load (hello.page) and on single-page-app navigations.
  function reportPage() {
    const page = currentPage();
    if (page.url === state.sentPage) return;
    if (send({ type: "page.view", url: page.url, title: page.title })) state.sentPage = page.url;
  }
  for (const method of ["pushState", "replaceState"]) {
    const original = history[method];
    history[method] = function patched(...args) {
      const result = original.apply(this, args);
      setTimeout(reportPage, 0);
      return result;
    };
  }
  window.addEventListener("popstate", () => setTimeout(reportPage, 0));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") markRead();
  });

  // ---------------------------------------------------------------------------------------
  // Start.
  function mount() {
    document.body.append(host);
    renderGreeting();
    renderState();
    renderBadge();
    if (state.open) openPanel();
    // A shopper with a conversation stays connected on every page, so agents see where they
    // are; a visitor who never chatted opens no socket until they open the widget.
    else if (store.get(KEYS.token) && state.conversationId) connect();
    else if (state.pending.length) connect();
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });

  window.PatronChat = Object.freeze({
    open: () => openPanel({ focus: true }),
    close: closePanel,
    page: reportPage,
  });
})();
