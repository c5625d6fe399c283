// The logq dashboard: plain JavaScript over the REST API, no build step.
// Live numbers arrive as server-sent events (/v1/events), one snapshot a
// second: the broker's totals and rates, the busiest topics' rates, and the
// page of the topic table this page asked for; its size does not grow with
// the topic count.
"use strict";

const HISTORY = 60; // points per chart: a minute
const view = document.getElementById("view");
const live = document.getElementById("live");
// rates: each busy topic's last minute; total: the broker's
const store = { snapshot: null, chartedAt: -Infinity, total: [], rates: new Map(), page: null };
// Counts navigations. A page takes the count as its token when route()
// calls it; after an await it draws nothing if the user has gone elsewhere.
let navigation = 0;
const superseded = (token) => token !== navigation;

// -- small helpers ---------------------------------------------------------------

function show(...children) {
  view.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined));
}

// Writes only what changed, so a screen reader is not told the same again.
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") element.textContent = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const rate = (n) => (n >= 100 ? number(Math.round(n)) : n.toFixed(1));
// a span of time as people say it: "7d", "12h", "30m", "45s", "250ms"
function span(ms) {
  if (ms === null || ms === undefined) return "forever";
  for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["m", 60000], ["s", 1000]]) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "–");
const topicHref = (name) => `#/topics/${encodeURIComponent(name)}`;
const messageHref = (id) => `#/messages/${encodeURIComponent(id)}`;

function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function valueText(message) {
  if ("value" in message) {
    return typeof message.value === "string" ? message.value : JSON.stringify(message.value);
  }
  if (!message.value_b64) return "";
  try {
    const raw = Uint8Array.from(atob(message.value_b64), (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    return `(binary, base64) ${message.value_b64}`;
  }
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = data && data.error;
    throw new Error(error ? `${error.code}: ${error.message}` : `HTTP ${response.status}`);
  }
  return data;
}

function table(columns, rows, label) {
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { "aria-label": label },
      h("thead", {}, h("tr", {}, columns.map(([title, cls]) => h("th", { scope: "col", class: cls }, title)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted text" }, "none yet")))
    )
  );
}

function card(label, value, id) {
  return h("div", { class: "card" }, h("div", { class: "n", "data-stat": id }, value), h("div", { class: "l" }, label));
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "cancel";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function notice(text, isError = false) {
  return h("p", { class: isError ? "notice error" : "notice", role: isError ? "alert" : "status" }, text);
}

// -- live snapshots ----------------------------------------------------------------

// The topic table's view: the event stream is asked for it in its query
// string, so each snapshot carries only the rows shown (a page of them,
// filtered and sorted by the server), whatever the topic count. What equals
// the server's default is left out of the query.
const topicView = { filter: "", sort: "name", order: "asc", offset: 0 };
const HISTORY_STEP_MS = 500; // a snapshot sooner than this after the last (a reconnect) adds no point

function eventsUrl() {
  const query = new URLSearchParams();
  if (topicView.filter) query.set("filter", topicView.filter);
  if (topicView.sort !== "name") query.set("sort", topicView.sort);
  if (topicView.order !== "asc") query.set("order", topicView.order);
  if (topicView.offset) query.set("offset", String(topicView.offset));
  const text = query.toString();
  return text ? `/v1/events?${text}` : "/v1/events";
}

function record(history, rates) {
  history.push({ in: rates.in_per_s, out: rates.out_per_s });
  while (history.length > HISTORY) history.shift();
}

// The broker-wide history, and one per busy topic while it stays busy.
function onSnapshot(snapshot) {
  store.snapshot = snapshot;
  if (snapshot.at_ms - store.chartedAt >= HISTORY_STEP_MS) {
    store.chartedAt = snapshot.at_ms;
    record(store.total, snapshot.totals);
    const busy = new Set(snapshot.busiest.map((topic) => topic.name));
    for (const name of [...store.rates.keys()]) if (!busy.has(name)) store.rates.delete(name);
    for (const topic of snapshot.busiest) {
      if (!store.rates.has(topic.name)) store.rates.set(topic.name, []);
      record(store.rates.get(topic.name), topic);
    }
  }
  if (store.page && store.page.live) store.page.live(snapshot);
}

// The browser reconnects by itself when a stream breaks, but not after an
// error answer (429 THROTTLED, 503 at the connection limit, 401): then the
// page tries again, waiting 1 s, doubling to 15 s, until snapshots flow.
// A new view of the topic table opens a new stream at once.
const RETRY_FIRST_MS = 1000;
const RETRY_LAST_MS = 15000;
let retryMs = RETRY_FIRST_MS;
let source = null;
let retryTimer = null;

function liveLabel(text, on) {
  setText(live, text);
  live.classList.toggle("on", on);
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  const opened = new EventSource(eventsUrl());
  source = opened;
  opened.onmessage = (event) => {
    retryMs = RETRY_FIRST_MS;
    liveLabel("live", true);
    onSnapshot(JSON.parse(event.data));
  };
  opened.onerror = () => {
    if (opened !== source) return;
    if (opened.readyState !== EventSource.CLOSED) {
      liveLabel("reconnecting…", false);
      return;
    }
    liveLabel("disconnected", false);
    opened.close();
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_LAST_MS);
  };
}

function changeView(change) {
  Object.assign(topicView, change);
  connect();
}

function latest(history) {
  return history && history.length ? history[history.length - 1] : { in: 0, out: 0 };
}

function chart(title, attrs, href) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${HISTORY - 1} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  for (const key of ["in", "out"]) {
    const polyline = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    polyline.setAttribute("class", key);
    svg.append(polyline);
  }
  return h(
    "figure",
    { class: "chart", ...attrs },
    h("h3", {}, href ? h("a", { href, "data-focus": `chart ${title}` }, title) : title),
    svg,
    h("figcaption", { class: "legend" }, h("span", { class: "in" }), h("span", { class: "out" }), h("span", { class: "peak" }))
  );
}

function drawChart(figure, title, history) {
  const peak = Math.max(1, ...history.map((point) => Math.max(point.in, point.out)));
  const line = (key) =>
    history
      .map((point, index) => `${HISTORY - history.length + index},${(100 - (point[key] / peak) * 95).toFixed(2)}`)
      .join(" ");
  const current = latest(history);
  figure.querySelector("svg").setAttribute("aria-label", `${title}: ${rate(current.in)} in and ${rate(current.out)} out per second`);
  figure.querySelector("polyline.in").setAttribute("points", line("in"));
  figure.querySelector("polyline.out").setAttribute("points", line("out"));
  setText(figure.querySelector(".legend .in"), `in ${rate(current.in)}/s`);
  setText(figure.querySelector(".legend .out"), `out ${rate(current.out)}/s`);
  setText(figure.querySelector(".legend .peak"), `peak ${rate(peak)}/s`);
}

function fillRow(row, values) {
  for (const [column, text] of Object.entries(values)) {
    const cell = row.querySelector(`[data-col=${column}]`);
    setText(cell.querySelector("a") || cell, text);
  }
}

// The focused element in the view, by its data-focus key ("" for one
// without), to find its equivalent after part of the view is drawn anew.
function focusKey() {
  const element = document.activeElement;
  return view.contains(element) ? element.dataset.focus || "" : null;
}

function restoreFocus(key) {
  if (key === null || (document.activeElement && view.contains(document.activeElement))) return;
  const same = [...view.querySelectorAll("[data-focus]")].find((element) => element.dataset.focus === key);
  (same || view).focus({ preventScroll: true });
}

// Replaces a part of the page (rows, charts) and gives the focus back to
// the equivalent of what had it, if the replaced part had it.
function redraw(container, children) {
  const focused = focusKey();
  container.replaceChildren(...children);
  restoreFocus(focused);
}

// -- pages -----------------------------------------------------------------------------

// the topic table's columns: key (as the server sorts by it), title, class
const TOPIC_COLUMNS = [
  ["name", "topic", "text"],
  ["partitions", "partitions", "hide-narrow"],
  ["messages", "messages", ""],
  ["bytes", "bytes", "hide-narrow"],
  ["pending", "pending", ""],
  ["in_flight", "in flight", ""],
  ["acked", "acked", ""],
  ["failed", "failed", ""],
  ["dead_lettered", "dead-lettered", ""],
  ["in_per_s", "in/s", "hide-narrow"],
  ["out_per_s", "out/s", "hide-narrow"],
];
const FILTER_DELAY_MS = 250; // typing pauses this long before the table is asked for anew
const NAME_LENGTH_MAX = 200; // the broker's longest topic name

// The overview is drawn once; after that each snapshot changes the numbers
// in place, and only a part whose members changed (the rows of the page
// shown, the busiest topics, the groups) is drawn anew, so the keyboard
// focus and a screen reader's place stay where they are.
function overview() {
  let parts = null;
  let drawnRows = null;
  let drawnCharts = null;
  let drawnGroups = null;
  let filterTimer = null;

  // rows a page holds: the server's default, as the page asks for no other
  const pageRows = () => store.snapshot.topics.limit;
  const sortBy = (key) => {
    const order = topicView.sort === key ? (topicView.order === "asc" ? "desc" : "asc") : key === "name" ? "asc" : "desc";
    changeView({ sort: key, order, offset: 0 });
    markSort();
  };
  const markSort = () => {
    for (const th of parts.head.querySelectorAll("th[data-sort]")) {
      const sorted = th.dataset.sort === topicView.sort;
      if (sorted) th.setAttribute("aria-sort", topicView.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  };
  const build = () => {
    const filter = h("input", {
      type: "search",
      id: "topic-filter",
      value: topicView.filter,
      maxlength: String(NAME_LENGTH_MAX),
      placeholder: "part of a name",
      autocomplete: "off",
      "data-focus": "filter",
      oninput: (event) => {
        clearTimeout(filterTimer);
        const text = event.target.value.trim();
        filterTimer = setTimeout(() => changeView({ filter: text, offset: 0 }), FILTER_DELAY_MS);
      },
    });
    parts = {
      head: h(
        "tr",
        {},
        TOPIC_COLUMNS.map(([key, title, cls]) =>
          h(
            "th",
            { scope: "col", class: cls || null, "data-sort": key },
            h("button", { type: "button", class: "sort", "data-focus": `sort ${key}`, onclick: () => sortBy(key) }, title)
          )
        )
      ),
      rows: h("tbody", {}),
      count: h("p", { class: "muted count", role: "status", id: "topic-count" }),
      previous: h("button", { type: "button", "data-focus": "previous", onclick: () => changeView({ offset: Math.max(0, topicView.offset - pageRows()) }) }, "Previous"),
      next: h("button", { type: "button", "data-focus": "next", onclick: () => changeView({ offset: topicView.offset + pageRows() }) }, "Next"),
      total: chart("All topics", { "data-broker-chart": "" }),
      charts: h("div", { class: "charts" }),
      groupsNote: h("p", { class: "muted" }),
      groups: h("tbody", {}),
    };
    markSort();
    show(
      h("h1", {}, "Overview"),
      h(
        "div",
        { class: "cards" },
        card("topics", "", "topics"),
        card("groups", "", "groups"),
        card("messages", "", "messages"),
        card("pending", "", "pending"),
        card("in flight", "", "in_flight"),
        card("acked", "", "acked"),
        card("failed (redelivered)", "", "failed"),
        card("dead-lettered", "", "dead_lettered"),
        card("in / s", "", "in_rate"),
        card("out / s", "", "out_rate"),
        card("connections", "", "connections")
      ),
      h("h2", {}, "Throughput"),
      parts.total,
      h("h2", {}, "Busiest topics"),
      h("p", { class: "muted" }, "The topics with the most messages in and out over about the last ten seconds."),
      parts.charts,
      h("h2", {}, "Topics"),
      h(
        "div",
        { class: "tools", role: "search", "aria-label": "Find topics" },
        h("label", {}, "Filter topics by name", filter),
        parts.count,
        h("div", { class: "pager", role: "group", "aria-label": "Pages of topics" }, parts.previous, parts.next)
      ),
      h("div", { class: "scroll" }, h("table", { "aria-label": "Topics" }, h("thead", {}, parts.head), parts.rows)),
      h("h2", {}, "Consumer lag"),
      parts.groupsNote,
      h(
        "div",
        { class: "scroll" },
        h(
          "table",
          { "aria-label": "Consumer groups" },
          h("thead", {}, h("tr", {}, [["group", "text"], ["topic", "text"], ["mode", "text hide-narrow"], ["members"], ["lag"], ["in flight"]].map(([title, cls]) => h("th", { scope: "col", class: cls }, title)))),
          parts.groups
        )
      )
    );
  };

  const topicRow = (topic) =>
    h(
      "tr",
      { "data-topic": topic.name },
      h("td", {}, h("a", { href: topicHref(topic.name), "data-focus": `topic ${topic.name}` }, topic.name)),
      h("td", { class: "hide-narrow", "data-col": "partitions" }),
      h("td", { "data-col": "messages" }),
      h("td", { class: "hide-narrow", "data-col": "bytes" }),
      h("td", { "data-col": "pending" }),
      h("td", { "data-col": "in_flight" }),
      h("td", { "data-col": "acked" }),
      h("td", { "data-col": "failed" }),
      h("td", { "data-col": "dead_lettered" }, h("a", { href: `${topicHref(topic.name)}/dlq`, "data-focus": `dlq ${topic.name}` })),
      h("td", { class: "hide-narrow", "data-col": "in_rate" }),
      h("td", { class: "hide-narrow", "data-col": "out_rate" })
    );
  const groupRow = (group) =>
    h(
      "tr",
      { "data-group": group.group },
      h("td", {}, group.group),
      h("td", { class: "text" }, h("a", { href: topicHref(group.topic), "data-focus": `group ${group.group} of ${group.topic}` }, group.topic)),
      h("td", { class: "text hide-narrow", "data-col": "mode" }),
      h("td", { "data-col": "members" }),
      h("td", { "data-col": "lag" }),
      h("td", { "data-col": "in_flight" })
    );
  const empty = (columns, text) => h("tr", {}, h("td", { colspan: columns, class: "muted text" }, text));

  const fillTopics = (table, totals) => {
    const names = JSON.stringify(table.rows.map((topic) => topic.name));
    if (names !== drawnRows) {
      const none = totals.topics === 0 ? "No topics yet." : table.filter ? `No topic name holds “${table.filter}”.` : "No topics on this page.";
      redraw(parts.rows, table.rows.length ? table.rows.map(topicRow) : [empty(TOPIC_COLUMNS.length, none)]);
      drawnRows = names;
    }
    const rows = parts.rows.querySelectorAll("tr[data-topic]");
    table.rows.forEach((topic, index) =>
      fillRow(rows[index], {
        partitions: number(topic.partitions),
        messages: number(topic.messages),
        bytes: size(topic.bytes),
        pending: number(topic.pending),
        in_flight: number(topic.in_flight),
        acked: number(topic.acked),
        failed: number(topic.failed),
        dead_lettered: number(topic.dead_lettered),
        in_rate: rate(topic.in_per_s),
        out_rate: rate(topic.out_per_s),
      })
    );
    const first = table.offset + 1;
    const last = table.offset + table.rows.length;
    const shown = table.rows.length ? `${number(first)}–${number(last)} of ` : "0 of ";
    const count = table.filter
      ? `${shown}${number(table.matching)} topics whose name holds “${table.filter}” (${number(totals.topics)} in all)`
      : `${shown}${number(table.matching)} topics`;
    setText(parts.count, count);
    parts.previous.disabled = table.offset === 0;
    parts.next.disabled = last >= table.matching;
  };

  const fillCharts = (snapshot) => {
    drawChart(parts.total, "All topics", store.total);
    const names = JSON.stringify(snapshot.busiest.map((topic) => topic.name));
    if (names !== drawnCharts) {
      redraw(
        parts.charts,
        snapshot.busiest.length
          ? snapshot.busiest.map((topic) => chart(topic.name, { "data-chart": topic.name }, topicHref(topic.name)))
          : [h("p", { class: "muted" }, "No topics yet.")]
      );
      drawnCharts = names;
    }
    for (const figure of parts.charts.querySelectorAll("[data-chart]")) {
      drawChart(figure, figure.dataset.chart, store.rates.get(figure.dataset.chart) || []);
    }
  };

  const fillGroups = (snapshot) => {
    const shape = JSON.stringify(snapshot.groups.map((group) => [group.topic, group.group]));
    if (shape !== drawnGroups) {
      redraw(parts.groups, snapshot.groups.length ? snapshot.groups.map(groupRow) : [empty(6, "none yet")]);
      drawnGroups = shape;
    }
    const rows = parts.groups.querySelectorAll("tr[data-group]");
    snapshot.groups.forEach((group, index) =>
      fillRow(rows[index], { mode: group.mode || "", members: number(group.members), lag: number(group.lag), in_flight: number(group.in_flight) })
    );
    const all = snapshot.totals.groups;
    setText(parts.groupsNote, all > snapshot.groups.length ? `The ${number(snapshot.groups.length)} groups with the most lag, of ${number(all)}.` : "");
  };

  const render = (snapshot) => {
    if (!snapshot) {
      show(h("h1", {}, "Overview"), h("p", { class: "muted" }, "Waiting for the first snapshot…"));
      return;
    }
    if (!parts) build();
    const totals = snapshot.totals;
    const cards = {
      topics: number(totals.topics),
      groups: number(totals.groups),
      messages: number(totals.messages),
      pending: number(totals.pending),
      in_flight: number(totals.in_flight),
      acked: number(totals.acked),
      failed: number(totals.failed),
      dead_lettered: number(totals.dead_lettered),
      in_rate: rate(totals.in_per_s),
      out_rate: rate(totals.out_per_s),
      connections: number(snapshot.connections.active_connections),
    };
    for (const [id, text] of Object.entries(cards)) setText(view.querySelector(`[data-stat=${id}]`), text);
    fillCharts(snapshot);
    fillTopics(snapshot.topics, totals);
    fillGroups(snapshot);
    // topics went away under the page shown: show the last page there is
    const table = snapshot.topics;
    if (table.offset === topicView.offset && table.offset > 0 && table.offset >= table.matching) {
      changeView({ offset: Math.max(0, Math.ceil(table.matching / table.limit) - 1) * table.limit });
    }
  };
  render(store.snapshot);
  return { live: render };
}

async function topicPage(name) {
  const token = navigation;
  show(h("h1", {}, `Topic ${name}`), h("p", { class: "muted" }, "Loading…"));
  const topic = await api("GET", `/v1/topics/${encodeURIComponent(name)}`);
  const groups = await Promise.all(
    topic.groups.map((group) => api("GET", `/v1/topics/${encodeURIComponent(name)}/groups/${encodeURIComponent(group)}`))
  );
  if (superseded(token)) return null;
  const lanes = store.snapshot ? store.snapshot.lanes.join(" › ") : "";
  // an archived topic: what the archive holds, and where the broker's disk starts
  const archived = topic.config.archive;
  const range = (from, to) => (from === null || from === undefined ? "–" : `${number(from)}–${number(to - 1)}`);
  const partitions = table(
    [
      ["partition", "text"],
      ["first offset"],
      ["last offset"],
      ["messages"],
      ["bytes", "hide-narrow"],
      ["pending"],
      ["in flight"],
      ...(archived ? [["archived", "text"], ["on disk from"]] : []),
    ],
    topic.partitions.map((p) =>
      h(
        "tr",
        {},
        h("td", {}, String(p.partition)),
        h("td", {}, number(p.first_offset)),
        h("td", {}, number(p.last_offset)),
        h("td", {}, number(p.messages)),
        h("td", { class: "hide-narrow" }, size(p.bytes)),
        h("td", {}, number(p.pending)),
        h("td", {}, number(p.in_flight)),
        ...(archived
          ? [h("td", { class: "text" }, range(p.archived_from, p.archived_to)), h("td", {}, number(p.local_first_offset))]
          : [])
      )
    ),
    "Partitions"
  );
  const groupSections = groups.map((group) =>
    h(
      "section",
      { "aria-label": `Group ${group.group}` },
      h("h3", {}, `Group ${group.group} `, h("span", { class: "muted" }, `(${group.settings.mode}, generation ${group.generation}, lag ${number(group.lag)})`)),
      table(
        [["member", "text"], ["partitions", "text"]],
        group.members.map((member) => h("tr", {}, h("td", {}, member.name), h("td", { class: "text" }, (group.assignment[member.name] || []).join(", ") || "–"))),
        `Members of ${group.group}`
      ),
      table(
        [["partition", "text"], ["committed"], ["log end"], ["lag"], ["in flight"], ["owner", "text hide-narrow"]],
        group.partitions.map((p) =>
          h("tr", {}, h("td", {}, String(p.partition)), h("td", {}, number(p.committed)), h("td", {}, number(p.log_end)), h("td", {}, number(p.lag)), h("td", {}, number(p.in_flight)), h("td", { class: "text hide-narrow" }, p.owner || "–"))
        ),
        `Lag of ${group.group}`
      )
    )
  );
  const results = h("div", { id: "peek-results" });
  const partitionSelect = h(
    "select",
    { name: "partition", "aria-label": "Partition" },
    h("option", { value: "" }, "all"),
    topic.partitions.map((p) => h("option", { value: String(p.partition) }, String(p.partition)))
  );
  const offset = h("input", { name: "offset", type: "number", min: "0", placeholder: "from start", "aria-label": "Offset" });
  const fromTime = h("input", { name: "from_time", type: "datetime-local", step: "1", "aria-label": "From time" });
  const limit = h("input", { name: "limit", type: "number", min: "1", max: "1000", value: "20", "aria-label": "Limit" });
  const peek = async (event) => {
    if (event) event.preventDefault();
    const query = new URLSearchParams({ limit: limit.value || "20" });
    if (partitionSelect.value !== "") query.set("partition", partitionSelect.value);
    if (offset.value !== "") query.set("offset", offset.value);
    if (fromTime.value) query.set("from_time", new Date(fromTime.value).toISOString());
    try {
      const found = await api("GET", `/v1/topics/${encodeURIComponent(name)}/messages?${query}`);
      results.replaceChildren(
        table(
          [["id", "text"], ["key", "text hide-narrow"], ["value", "text"], ["time", "text hide-narrow"]],
          found.messages.map((m) =>
            h("tr", {}, h("td", {}, h("a", { href: messageHref(m.id) }, m.id)), h("td", { class: "text hide-narrow" }, m.key ?? ""), h("td", { class: "value" }, valueText(m)), h("td", { class: "text hide-narrow" }, when(m.timestamp)))
          ),
          "Messages"
        )
      );
    } catch (error) {
      results.replaceChildren(notice(error.message, true));
    }
  };
  show(
    h("h1", {}, `Topic ${name}`),
    h("p", {}, h("a", { href: "#/" }, "← Overview"), " · ", h("a", { href: `${topicHref(name)}/dlq` }, `Dead letters (${number(topic.in_dlq)} in the DLQ)`)),
    h(
      "div",
      { class: "cards" },
      card("messages", number(topic.messages), "messages"),
      card("pending", number(topic.pending), "pending"),
      card("in flight", number(topic.in_flight), "in_flight"),
      card("acked", number(topic.acked), "acked"),
      card("dead-lettered", number(topic.dead_lettered), "dead_lettered"),
      card("in the DLQ now", number(topic.in_dlq), "in_dlq")
    ),
    (topic.damaged ?? []).map((d) =>
      notice(`Partition ${d.partition}: offsets ${d.start}..${d.end - 1} lost to damage on disk (${d.reason})`, true)
    ),
    h(
      "p",
      { class: "muted" },
      `Priority lanes: ${lanes || "–"} · retention ${span(topic.config.retention_ms)}` +
        (archived ? " · archived (older data read from the archive; bytes are the broker's disk)" : "")
    ),
    h("h2", {}, "Partitions"),
    partitions,
    h("h2", {}, "Groups"),
    groupSections.length ? h("div", {}, groupSections) : h("p", { class: "muted" }, "No groups yet."),
    h("h2", {}, "Peek messages"),
    h("form", { class: "row", onsubmit: peek, "aria-label": "Peek messages" }, h("label", {}, "Partition", partitionSelect), h("label", {}, "Offset", offset), h("label", {}, "From time", fromTime), h("label", {}, "Limit", limit), h("button", { type: "submit", class: "primary" }, "Peek")),
    results
  );
  await peek();
  return {};
}

async function messagePage(id) {
  const token = navigation;
  show(h("h1", {}, "Message"), h("p", { class: "muted" }, "Loading…"));
  const [message, trace] = await Promise.all([
    api("GET", `/v1/messages/${encodeURIComponent(id)}`),
    api("GET", `/v1/messages/${encodeURIComponent(id)}/trace`),
  ]);
  if (superseded(token)) return null;
  const detail = (event) =>
    ["group", "consumer", "attempt", "reason", "detail"]
      .filter((key) => event[key] !== undefined)
      .map((key) => `${key} ${event[key]}`)
      .join(" · ");
  show(
    h("h1", {}, `Message ${message.id}`),
    h("p", {}, h("a", { href: topicHref(message.topic) }, `← Topic ${message.topic}`)),
    h(
      "dl",
      { class: "kv" },
      h("dt", {}, "topic"), h("dd", {}, message.topic),
      h("dt", {}, "partition"), h("dd", {}, String(message.partition)),
      h("dt", {}, "offset"), h("dd", {}, String(message.offset)),
      h("dt", {}, "key"), h("dd", {}, message.key ?? "–"),
      h("dt", {}, "priority"), h("dd", {}, message.priority),
      h("dt", {}, "time"), h("dd", {}, when(message.timestamp)),
      h("dt", {}, "delivery attempts"), h("dd", {}, String(trace.delivery_attempts)),
      h("dt", {}, "publish to last settle"), h("dd", {}, trace.total_latency_ms === null ? "–" : `${number(trace.total_latency_ms)} ms`)
    ),
    h("h2", {}, "Value"),
    h("pre", { "data-value": "" }, valueText(message)),
    h("h2", {}, "Headers"),
    Object.keys(message.headers).length
      ? h("dl", { class: "kv" }, Object.entries(message.headers).flatMap(([key, value]) => [h("dt", {}, key), h("dd", {}, value)]))
      : h("p", { class: "muted" }, "none"),
    h("h2", {}, "Lifecycle"),
    trace.traced === false ? notice("Tracing is off for this topic.") : null,
    h(
      "ol",
      { class: "timeline", "aria-label": "Lifecycle" },
      trace.events.map((event) => h("li", { "data-event": event.event }, h("strong", {}, event.event), h("span", { class: "when" }, when(event.at_ms)), detail(event) ? h("div", { class: "muted" }, detail(event)) : null))
    )
  );
  return {};
}

async function dlqPage(name) {
  const token = navigation;
  show(h("h1", {}, `Dead letters of ${name}`), h("p", { class: "muted" }, "Loading…"));
  const base = `/v1/topics/${encodeURIComponent(name)}/dlq`;
  const status = h("div", { id: "dlq-status" });
  const found = await api("GET", `${base}?limit=1000`);
  if (superseded(token)) return null;
  const letters = found.messages;
  const boxes = letters.map((letter) => h("input", { type: "checkbox", value: letter.id, "aria-label": `Select ${letter.id}` }));
  const selected = () => boxes.filter((box) => box.checked).map((box) => box.value);
  const act = async (verb, path, ids, question) => {
    const count = ids ? ids.length : letters.length;
    if (!count) {
      status.replaceChildren(notice("Select dead letters first."));
      return;
    }
    // the page lists at most 1,000; "all" acts on every stored letter
    const shown = !ids && letters.length >= 1000 ? `${number(count)} or more` : number(count);
    if (!(await confirmAction(question.replace("{n}", shown)))) return;
    try {
      const answer = await api("POST", path, ids ? { ids } : {});
      if (superseded(token) || !(await dlqPage(name))) return;
      const done = Object.entries(answer).map(([key, value]) => `${key} ${value}`).join(", ");
      document.getElementById("dlq-status").replaceChildren(notice(`${verb}: ${done}.`));
    } catch (error) {
      status.replaceChildren(notice(error.message, true));
    }
  };
  const rows = letters.map((letter, index) =>
    h(
      "tr",
      { "data-letter": letter.id },
      h("td", {}, boxes[index]),
      h("td", { class: "text" }, h("a", { href: messageHref(letter.id) }, letter.id)),
      h("td", { class: "text hide-narrow" }, letter.origin_id ? h("a", { href: messageHref(letter.origin_id) }, letter.origin_id) : "–"),
      h("td", { class: "text clip", title: letter.reason || "" }, letter.reason || "–"),
      h("td", {}, number(letter.attempts)),
      h("td", { class: "text hide-narrow" }, letter.group || "–"),
      h("td", { class: "text hide-narrow" }, when(letter.dead_lettered_at)),
      h("td", { class: "value narrow hide-narrow", title: valueText(letter) }, valueText(letter)),
      h("td", {}, h("button", { type: "button", "aria-label": `Redrive ${letter.id}`, onclick: () => act("Redrive", `${base}/redrive`, [letter.id], `Hand ${letter.id} back to group ${letter.group}?`) }, "Redrive"))
    )
  );
  show(
    h("h1", {}, `Dead letters of ${name}`),
    h("p", {}, h("a", { href: topicHref(name) }, `← Topic ${name}`)),
    h(
      "div",
      { class: "actions", role: "group", "aria-label": "Dead-letter actions" },
      h("button", { type: "button", onclick: () => act("Redrive", `${base}/redrive`, selected(), "Hand {n} selected dead letters back to the groups that dead-lettered them?") }, "Redrive selected"),
      h("button", { type: "button", onclick: () => act("Redrive", `${base}/redrive`, null, "Hand every dead letter ({n}) back to its group?") }, "Redrive all"),
      h("button", { type: "button", onclick: () => act("Requeue", `${base}/requeue`, selected(), "Publish {n} selected dead letters again as new messages (every group sees them)?") }, "Requeue selected"),
      h("button", { type: "button", class: "danger", onclick: () => act("Purge", `${base}/purge`, selected(), "Drop {n} selected dead letters for good?") }, "Purge selected"),
      h("button", { type: "button", class: "danger", onclick: () => act("Purge", `${base}/purge`, null, "Drop every dead letter ({n}) for good?") }, "Purge all")
    ),
    status,
    letters.length >= 1000 ? h("p", { class: "muted" }, "Showing the first 1,000 dead letters.") : null,
    table(
      [
        [h("span", { class: "visually-hidden" }, "Select")],
        ["dead letter", "text"],
        ["origin", "text hide-narrow"],
        ["reason", "text"],
        ["attempts"],
        ["group", "text hide-narrow"],
        ["dead at", "text hide-narrow"],
        ["value", "text hide-narrow"],
        [h("span", { class: "visually-hidden" }, "Actions")],
      ],
      rows,
      "Dead letters"
    )
  );
  return {};
}

// -- routing ----------------------------------------------------------------------------

const ROUTES = [
  [/^#?\/?$/, overview],
  [/^#\/topics\/([^/]+)\/dlq$/, dlqPage],
  [/^#\/topics\/([^/]+)$/, topicPage],
  [/^#\/messages\/(.+)$/, messagePage],
];

async function route() {
  const token = ++navigation;
  const hash = location.hash || "#/";
  store.page = null;
  for (const [pattern, page] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    try {
      const shown = await page(...match.slice(1).map(decodeURIComponent));
      if (superseded(token)) return;
      store.page = shown;
    } catch (error) {
      if (superseded(token)) return;
      show(h("h1", {}, "Not available"), notice(error.message, true), h("p", {}, h("a", { href: "#/" }, "← Overview")));
    }
    view.focus({ preventScroll: true });
    return;
  }
  show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "← Overview")));
}

window.addEventListener("hashchange", route);
connect();
route();
