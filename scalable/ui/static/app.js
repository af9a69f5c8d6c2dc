/* The explorer's pages. Each URL is one page; its data comes from the JSON endpoints under /api/.
   Every value from the ledger reaches the page as text (textContent), never as markup. */
"use strict";

(function () {
  const main = document.getElementById("main");
  const statusRegion = document.getElementById("status");

  // --- small helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (value === null || value === undefined || value === "") continue;
      if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
      else search.append(key, value);
    }
    const text = search.toString();
    return text ? "?" + text : "";
  }

  async function api(path, params) {
    const response = await fetch("/api/" + path + query(params), { headers: { Accept: "application/json" } });
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      throw new ApiError(`error: the explorer answered ${response.status} without data`, response.status);
    }
    if (!response.ok) throw new ApiError(data && data.error ? data.error : `error: ${response.status}`, response.status);
    return data;
  }

  const params = new URLSearchParams(location.search);

  function announce(text) {
    statusRegion.textContent = text;
  }

  function page(title, ...children) {
    document.title = `${title} · scalable explorer`;
    main.replaceChildren(el("h1", { text: title }), ...children);
  }

  function ready(name) {
    main.setAttribute("aria-busy", "false");
    // When the page was drawn, in ms since the navigation started (the browser's own clock).
    main.dataset.readyMs = String(performance.now());
    main.dataset.ready = name || "1";
  }

  function fail(err) {
    main.replaceChildren(
      el("h1", { text: document.title.split(" · ")[0] || "Error" }),
      el("p", { class: "alert", role: "alert", text: err.message || String(err) })
    );
    main.dataset.error = String(err.status || "1");
    ready("error");
  }

  function bytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
  }

  function time(ts) {
    if (!ts) return "";
    return String(ts).replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function seconds(s) {
    if (s === null || s === undefined) return "";
    const v = Number(s);
    if (v < 1) return `${(v * 1000).toFixed(v < 0.01 ? 2 : 0)} ms`;
    if (v < 120) return `${v.toFixed(2)} s`;
    return `${(v / 60).toFixed(1)} min`;
  }

  function short(digest) {
    return digest ? String(digest).slice(0, 12) : "";
  }

  function isDigest(text) {
    return /^[0-9a-f]{64}$/.test(String(text || ""));
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || text}`, text: text });
  }

  function copyButton(value, what) {
    return el("button", {
      type: "button",
      class: "copy",
      title: `Copy the ${what || "value"}`,
      "aria-label": `Copy the ${what || "value"} ${value}`,
      dataset: { copy: value },
      onclick: async (event) => {
        const button = event.currentTarget;
        try {
          await navigator.clipboard.writeText(value);
          button.textContent = "copied";
        } catch (err) {
          // Without clipboard access (plain http off loopback), select the text for the user.
          const field = el("input", { value: value, readonly: true, "aria-label": what || "value" });
          button.replaceWith(field);
          field.select();
          return;
        }
        announce(`Copied the ${what || "value"}.`);
        setTimeout(() => (button.textContent = "copy"), 1500);
      },
    }, "copy");
  }

  function digestCell(digest) {
    if (!digest) return el("span", { class: "muted", text: "—" });
    return el(
      "span",
      { class: "mono" },
      el("a", { href: "/artifact" + query({ digest: digest }), title: digest, text: short(digest) }),
      " ",
      copyButton(digest, "digest")
    );
  }

  function runLink(runId) {
    return runId ? el("a", { href: `/runs/${encodeURIComponent(runId)}`, class: "mono", text: runId }) : "";
  }

  function nodeHref(id, kind) {
    if (kind === "run") return `/runs/${encodeURIComponent(id)}`;
    if (isDigest(id)) return "/artifact" + query({ digest: id });
    return "/artifact" + query({ location: id });
  }

  function table(columns, rows, options) {
    // columns: [{title, cell(row) -> node|string, num, sort}]
    const opts = options || {};
    const head = el(
      "tr",
      {},
      columns.map((c) => {
        const th = el("th", { scope: "col", class: c.num ? "num" : null });
        if (c.sortKey && opts.sortLink) {
          const current = opts.sort === c.sortKey;
          if (current) th.setAttribute("aria-sort", opts.order === "asc" ? "ascending" : "descending");
          th.append(el("a", { href: opts.sortLink(c.sortKey, current && opts.order === "desc" ? "asc" : "desc"), text: c.title }));
        } else {
          th.textContent = c.title;
        }
        return th;
      })
    );
    const body = el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          { class: opts.rowClass ? opts.rowClass(row) : null, dataset: opts.rowData ? opts.rowData(row) : null },
          columns.map((c) => {
            const value = c.cell(row);
            return el("td", { class: c.num ? "num" : c.class || null }, value === null || value === undefined ? "" : value);
          })
        )
      )
    );
    const t = el("table", { id: opts.id || null }, opts.caption ? el("caption", { class: "visually-hidden", text: opts.caption }) : null, el("thead", {}, head), body);
    const wrap = el("div", { class: "table-wrap" }, t);
    if (!rows.length) wrap.append(el("p", { class: "muted", style: null, text: opts.empty || "Nothing here." }));
    return wrap;
  }

  function facts(pairs) {
    return el(
      "dl",
      { class: "facts" },
      pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== "").map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])
    );
  }

  // --- runs ----------------------------------------------------------------------------------

  const RUN_FILTERS = ["project", "status", "since", "until", "q"];

  async function pageRuns() {
    document.title = "Runs · scalable explorer";
    const wanted = {};
    for (const key of [...RUN_FILTERS, "sort", "order", "limit", "offset"]) wanted[key] = params.get(key);
    const data = await api("runs", wanted);
    const form = el(
      "form",
      { class: "filters", method: "get", action: "/runs", role: "search", "aria-label": "Filter runs" },
      el("div", {}, el("label", { for: "f-project", text: "Project" }),
        el("select", { id: "f-project", name: "project" }, el("option", { value: "", text: "any" }),
          Object.entries(data.projects).map(([p, n]) => el("option", { value: p, selected: p === params.get("project"), text: `${p} (${n})` })))),
      el("div", {}, el("label", { for: "f-status", text: "Status" }),
        el("select", { id: "f-status", name: "status" }, el("option", { value: "", text: "any" }),
          Object.entries(data.statuses).map(([s, n]) => el("option", { value: s, selected: s === params.get("status"), text: `${s} (${n})` })))),
      el("div", {}, el("label", { for: "f-since", text: "Started from" }),
        el("input", { id: "f-since", name: "since", placeholder: "2026-01-01", value: params.get("since") || "", size: 20 })),
      el("div", {}, el("label", { for: "f-until", text: "Started until" }),
        el("input", { id: "f-until", name: "until", placeholder: "2026-12-31T23:59:59Z", value: params.get("until") || "", size: 20 })),
      el("div", {}, el("label", { for: "f-q", text: "Text (run, project, task, artifact, location)" }),
        el("input", { id: "f-q", name: "q", type: "search", value: params.get("q") || "", size: 28 })),
      params.get("sort") ? el("input", { type: "hidden", name: "sort", value: params.get("sort") }) : null,
      params.get("order") ? el("input", { type: "hidden", name: "order", value: params.get("order") }) : null,
      el("div", {}, el("button", { type: "submit", text: "Filter" }), " ", el("a", { href: "/runs", class: "button secondary", text: "Clear" }))
    );
    const first = data.total ? data.offset + 1 : 0;
    const last = data.offset + data.runs.length;
    const summary = el("p", { class: "summary", id: "runs-summary" },
      `Showing ${first}–${last} of ${data.total} matching run(s); ${data.all_runs} run(s) in the ledger.`);
    const sortLink = (key, order) => "/runs" + query({ ...Object.fromEntries(RUN_FILTERS.map((k) => [k, params.get(k)])), sort: key, order: order });
    const auditCells = new Map();
    const columns = [
      { title: "Run", sortKey: "run_id", cell: (r) => runLink(r.run_id) },
      { title: "Project", sortKey: "project", cell: (r) => r.project || "" },
      { title: "Status", sortKey: "status", cell: (r) => badge(r.status) },
      { title: "Started", sortKey: "started_at", cell: (r) => time(r.started_at) },
      { title: "Finished", sortKey: "finished_at", cell: (r) => time(r.finished_at) },
      { title: "Tasks", sortKey: "tasks", num: true, cell: (r) => (r.failed_tasks ? `${r.tasks} (${r.failed_tasks} failed)` : String(r.tasks)) },
      { title: "Artifacts", sortKey: "artifacts", num: true, cell: (r) => String(r.artifacts) },
      { title: "Bytes", sortKey: "bytes", num: true, cell: (r) => el("span", { title: `${r.bytes} bytes`, text: bytes(r.bytes) }) },
      { title: "Cache hits", sortKey: "cache_hits", num: true, cell: (r) => String(r.cache_hits) },
      { title: "Cache misses", sortKey: "cache_misses", num: true, cell: (r) => String(r.cache_misses) },
      { title: "Events", sortKey: "events", num: true, cell: (r) => String(r.events) },
      {
        title: "Audit",
        cell: (r) => {
          const cell = el("span", { class: "muted", text: "checking…" });
          auditCells.set(r.run_id, cell);
          return cell;
        },
      },
    ];
    const pager = el("nav", { class: "pager", "aria-label": "Pages of runs" });
    const here = { ...Object.fromEntries([...RUN_FILTERS, "sort", "order", "limit"].map((k) => [k, params.get(k)])) };
    if (data.offset > 0) pager.append(el("a", { href: "/runs" + query({ ...here, offset: Math.max(0, data.offset - data.limit) }), text: "← Newer page" }));
    if (last < data.total) pager.append(el("a", { href: "/runs" + query({ ...here, offset: data.offset + data.limit }), text: "Next page →" }));
    page(
      "Runs",
      form,
      summary,
      table(columns, data.runs, {
        id: "runs-table",
        caption: "Runs",
        sort: data.sort,
        order: data.order,
        sortLink: sortLink,
        rowData: (r) => ({ run: r.run_id }),
        empty: "No run matches. Clear the filters, or run something first.",
      }),
      pager
    );
    ready("runs");
    announce(summary.textContent);
    if (data.runs.length) {
      try {
        const states = await api("audit-states", { run: data.runs.map((r) => r.run_id) });
        for (const [runId, state] of Object.entries(states)) {
          const cell = auditCells.get(runId);
          if (!cell) continue;
          const node = state.ok ? badge("ok") : state.ok === null ? badge("unknown") : el("a", { href: "/audit" + query({ run: runId }) }, badge(`${state.problems} problem(s)`, "problem"));
          cell.replaceWith(node);
        }
      } catch (err) {
        for (const cell of auditCells.values()) cell.textContent = "not checked";
      }
      main.dataset.audited = "1";
    }
  }

  // --- one run -------------------------------------------------------------------------------

  function timeline(tasks) {
    const rows = tasks.filter((t) => t.started_at);
    if (!rows.length) return el("p", { class: "muted", text: "No task has started in this run." });
    const t0 = Math.min(...rows.map((t) => Date.parse(t.started_at)));
    const ends = rows.map((t) => Date.parse(t.ended_at || t.started_at));
    const t1 = Math.max(...ends, t0 + 1);
    const labelWidth = 180;
    const width = 1000;
    const rowHeight = 22;
    const height = rows.length * rowHeight + 30;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "timeline");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `Timeline of ${rows.length} task execution(s) over ${seconds((t1 - t0) / 1000)}; the table below lists them.`);
    const scale = (ms) => labelWidth + ((ms - t0) / (t1 - t0)) * (width - labelWidth - 20);
    rows.forEach((t, i) => {
      const y = i * rowHeight + 4;
      const start = Date.parse(t.started_at);
      const end = Date.parse(t.ended_at || t.started_at);
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", 4);
      label.setAttribute("y", y + 14);
      label.textContent = `${t.task_name} ${t.task_id && t.task_id !== t.task_name ? t.task_id.slice(0, 6) : ""}`;
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", scale(start));
      bar.setAttribute("y", y + 3);
      bar.setAttribute("width", Math.max(3, scale(end) - scale(start)));
      bar.setAttribute("height", rowHeight - 8);
      bar.setAttribute("class", `bar-${t.status}`);
      const tip = document.createElementNS(ns, "title");
      tip.textContent = `${t.task_name}: ${t.status}, ${seconds(t.duration_s)}, from ${time(t.started_at)} to ${time(t.ended_at)}, worker ${t.worker || "?"}`;
      bar.append(tip);
      svg.append(label, bar);
    });
    const axis = document.createElementNS(ns, "text");
    axis.setAttribute("x", labelWidth);
    axis.setAttribute("y", height - 6);
    axis.textContent = `0 … ${seconds((t1 - t0) / 1000)} after the first task started`;
    svg.append(axis);
    return svg;
  }

  function compareForm(runId, project) {
    // Drawn at once; the runs to choose from arrive after the page is ready.
    const select = el("select", { id: "compare-with", name: "b", disabled: true }, el("option", { value: "", text: "loading the runs of this project…" }));
    api("runs", { project: project, limit: 200 }).then((others) => {
      const choices = others.runs.filter((r) => r.run_id !== runId);
      select.replaceChildren(...choices.map((r) => el("option", { value: r.run_id, text: `${r.run_id} (${r.status}, ${time(r.started_at)})` })));
      if (!choices.length) select.append(el("option", { value: "", text: "no other run of this project" }));
      select.disabled = !choices.length;
      main.dataset.compareReady = "1";
    }, (err) => {
      select.replaceChildren(el("option", { value: "", text: err.message }));
    });
    return el(
      "form",
      {
        class: "controls",
        onsubmit: (event) => {
          event.preventDefault();
          if (select.value) location.href = `/compare/${encodeURIComponent(runId)}/${encodeURIComponent(select.value)}`;
        },
      },
      el("div", {}, el("label", { for: "compare-with", text: "Compare with…" }), select),
      el("button", { type: "submit", id: "compare-button", text: "Compare" })
    );
  }

  function artifactLink(a) {
    if (!a.location) return a.artifact_name || "";
    return el("a", { href: "/artifact" + query({ location: a.location }), text: a.artifact_name || a.location });
  }

  function downloadLink(location, digest) {
    if (!location || !digest) return "";
    return el("a", { href: "/api/download" + query({ location: location, digest: digest }), download: "", text: "download" });
  }

  async function pageRun(runId) {
    document.title = `Run ${runId} · scalable explorer`;
    const data = await api(`runs/${encodeURIComponent(runId)}`);
    const r = data.run;
    const started = data.started || {};
    const finished = data.finished || {};
    const compare = compareForm(runId, r.project);
    page(
      `Run ${runId}`,
      el("p", {}, badge(r.status), " ",
        el("a", { href: "/lineage" + query({ node: runId, direction: "down" }), text: "lineage of its outputs" }), " · ",
        el("a", { href: "/audit" + query({ run: runId }), text: "audit this run" }), " · ",
        el("a", { href: "/sql" + query({ q: `SELECT * FROM events WHERE run_id = '${runId}' ORDER BY timestamp` }), text: "its events in SQL" })),
      el("div", { class: "columns" },
        el("section", { class: "panel", "aria-labelledby": "h-summary" }, el("h2", { id: "h-summary", text: "Summary" }),
          facts([
            ["Project", r.project],
            ["Target", r.target],
            ["Started", time(r.started_at)],
            ["Finished", time(r.finished_at)],
            ["Tasks", `${r.tasks} (${r.failed_tasks} failed)`],
            ["Artifacts", `${r.artifacts} (${bytes(r.bytes)})`],
            ["Cache", `${r.cache_hits} hit(s), ${r.cache_misses} miss(es)`],
            ["Events", String(r.events)],
            ["Error", finished.error ? `${finished.error_type || ""}: ${finished.error}` : null],
          ])),
        el("section", { class: "panel", "aria-labelledby": "h-manifest" }, el("h2", { id: "h-manifest", text: "Manifest lock and origin" }),
          facts([
            ["Manifest lock", data.manifest_lock ? el("span", { class: "mono" }, el("span", { id: "manifest-lock", text: data.manifest_lock }), " ", copyButton(data.manifest_lock, "manifest lock")) : el("span", { class: "muted", text: "none recorded" })],
            ["Manifest", started.manifest],
            ["Host", started.host],
            ["User", started.user],
            ["Provider", started.provider],
            ["Default storage", started.default_storage],
            ["scalable", started.scalable_version],
            ["Writer", started.writer],
            ["Sealed", finished.seal ? `${Object.keys(finished.seal.heads || {}).length} writer chain(s)${finished.seal.hmac ? ", HMAC" : ""}` : null],
          ]))),
      el("section", { "aria-labelledby": "h-compare" }, el("h2", { id: "h-compare", text: "Compare" }), compare),
      el("section", { "aria-labelledby": "h-tasks" }, el("h2", { id: "h-tasks", text: `Tasks (${data.tasks.length})` }),
        timeline(data.tasks),
        table([
          { title: "Task", cell: (t) => t.task_name },
          { title: "Id", cell: (t) => el("span", { class: "mono", text: t.task_id || "" }) },
          { title: "Status", cell: (t) => badge(t.status) },
          { title: "Started", cell: (t) => time(t.started_at) },
          { title: "Ended", cell: (t) => time(t.ended_at) },
          { title: "Duration", num: true, cell: (t) => seconds(t.duration_s) },
          { title: "Worker", cell: (t) => el("span", { class: "mono", text: t.worker || "" }) },
          { title: "Error", cell: (t) => (t.error ? `${t.error_type || ""}: ${t.error}` : "") },
        ], data.tasks, { id: "tasks-table", caption: "Tasks" })),
      el("section", { "aria-labelledby": "h-artifacts" }, el("h2", { id: "h-artifacts", text: `Artifacts (${data.artifacts.length} events)` }),
        table([
          { title: "Time", cell: (a) => time(a.timestamp) },
          { title: "Op", cell: (a) => a.op },
          { title: "Name", cell: (a) => artifactLink(a) },
          { title: "Task", cell: (a) => a.task_name || "" },
          { title: "Kind", cell: (a) => a.kind || "" },
          { title: "Size", num: true, cell: (a) => bytes(a.size_bytes) },
          { title: "Digest", cell: (a) => digestCell(a.digest) },
          { title: "Location", class: "break mono", cell: (a) => a.location || "" },
          { title: "", cell: (a) => (["put", "recorded"].includes(a.op) ? downloadLink(a.location, a.digest) : "") },
        ], data.artifacts, { id: "artifacts-table", caption: "Artifacts", empty: "This run recorded no artifact." })),
      el("section", { "aria-labelledby": "h-cache" }, el("h2", { id: "h-cache", text: `Cache (${r.cache_hits} hits, ${r.cache_misses} misses)` }),
        table([
          { title: "Time", cell: (c) => time(c.timestamp) },
          { title: "Op", cell: (c) => badge(c.op, c.op === "hit" ? "ok" : c.op === "miss" ? "changed" : "added") },
          { title: "Function", cell: (c) => el("span", { class: "mono", text: c.function_name || "" }) },
          { title: "Task", cell: (c) => c.task_name || "" },
          { title: "Key", cell: (c) => el("span", { class: "mono", title: c.key_digest || "", text: short(c.key_digest) }) },
          { title: "Written by", cell: (c) => (c.writer_run ? runLink(c.writer_run) : c.op === "hit" ? el("span", { class: "muted", text: "unknown" }) : "") },
          { title: "Result", cell: (c) => digestCell(c.digest) },
        ], data.cache, { id: "cache-table", caption: "Cache lookups", empty: "No cache lookup in this run." }))
    );
    ready("run");
  }

  // --- compare -------------------------------------------------------------------------------

  async function pickRuns() {
    const recent = await api("runs", { limit: 200 });
    const options = () => recent.runs.map((r) => el("option", { value: r.run_id, text: `${r.run_id} (${r.project || "?"}, ${r.status})` }));
    const a = el("select", { id: "cmp-a", name: "a" }, options());
    const b = el("select", { id: "cmp-b", name: "b" }, options());
    if (b.options.length > 1) b.selectedIndex = 1;
    page(
      "Compare two runs",
      el("form", {
        class: "controls",
        onsubmit: (event) => {
          event.preventDefault();
          location.href = `/compare/${encodeURIComponent(a.value)}/${encodeURIComponent(b.value)}`;
        },
      },
        el("div", {}, el("label", { for: "cmp-a", text: "Run A (from)" }), a),
        el("div", {}, el("label", { for: "cmp-b", text: "Run B (to)" }), b),
        el("button", { type: "submit", text: "Compare" })),
      el("p", { class: "muted", text: "Artifacts are matched by location (a run's own id in a location is taken out); tasks by name." })
    );
    ready("compare-pick");
  }

  async function pageCompare(runA, runB) {
    document.title = "Compare runs · scalable explorer";
    if (!runA || !runB) return pickRuns();
    const data = await api("compare", { a: runA, b: runB });
    const c = data.counts;
    const verdict = data.differs
      ? `The runs differ: ${c.artifacts.changed} artifact(s) changed, ${c.artifacts.added} added, ${c.artifacts.removed} removed, ${c.artifacts.same} the same; ${c.tasks.changed + c.tasks.added + c.tasks.removed} task(s) differ.`
      : `The runs are the same: ${c.artifacts.same} artifact(s) and ${c.tasks.same} task(s) alike.`;
    const side = (label, r) => el("section", { class: "panel" }, el("h2", { text: `${label}: ` }, runLink(r.run_id)),
      facts([["Status", badge(r.status)], ["Started", time(r.started_at)], ["Artifacts", `${r.artifacts} (${bytes(r.bytes)})`], ["Tasks", String(r.tasks)]]));
    page(
      "Compare runs",
      el("p", {}, el("a", { href: `/compare/${encodeURIComponent(runB)}/${encodeURIComponent(runA)}`, text: "swap A and B" })),
      el("div", { class: "columns" }, side("A", data.a), side("B", data.b)),
      el("p", { class: data.differs ? "note" : "summary", id: "verdict", role: "status", text: verdict }),
      el("section", { "aria-labelledby": "h-cmp-art" }, el("h2", { id: "h-cmp-art", text: "Artifacts by location" }),
        table([
          { title: "Status", cell: (x) => badge(x.status) },
          { title: "Name", cell: (x) => x.name || "" },
          { title: "Location", class: "break mono", cell: (x) => x.key },
          { title: "Digest A", cell: (x) => digestCell(x.digest_a) },
          { title: "Digest B", cell: (x) => digestCell(x.digest_b) },
          { title: "Size A", num: true, cell: (x) => bytes(x.size_a) },
          { title: "Size B", num: true, cell: (x) => bytes(x.size_b) },
        ], data.artifacts, { id: "compare-artifacts", caption: "Artifacts compared", rowClass: (x) => `status-${x.status}`, rowData: (x) => ({ status: x.status, name: x.name || "" }), empty: "Neither run left an artifact." })),
      el("section", { "aria-labelledby": "h-cmp-tasks" }, el("h2", { id: "h-cmp-tasks", text: "Tasks by name" }),
        table([
          { title: "Status", cell: (x) => badge(x.status) },
          { title: "Task", cell: (x) => x.task_name },
          { title: "Runs A", num: true, cell: (x) => String(x.executions_a) },
          { title: "Runs B", num: true, cell: (x) => String(x.executions_b) },
          { title: "Failed A", num: true, cell: (x) => String(x.failed_a) },
          { title: "Failed B", num: true, cell: (x) => String(x.failed_b) },
          { title: "Time A", num: true, cell: (x) => seconds(x.duration_a) },
          { title: "Time B", num: true, cell: (x) => seconds(x.duration_b) },
        ], data.tasks, { id: "compare-tasks", caption: "Tasks compared", rowClass: (x) => `status-${x.status}`, rowData: (x) => ({ status: x.status }), empty: "Neither run ran a task." }))
    );
    ready("compare");
  }

  // --- artifacts -----------------------------------------------------------------------------

  function edgeList(edges, end) {
    if (!edges.length) return el("span", { class: "muted", text: "nothing recorded" });
    return el("ul", {}, edges.map((e) => {
      const other = e[end];
      const kind = isDigest(other) ? "artifact" : other === e.run_id ? "run" : "artifact";
      return el("li", {}, `${e.relation}: `, el("a", { href: nodeHref(other, kind), class: "mono", text: isDigest(other) ? short(other) : other }),
        e.run_id && e.run_id !== other ? el("span", { class: "muted" }, " in ", runLink(e.run_id)) : null);
    }));
  }

  async function pageArtifact() {
    const loc = params.get("location");
    const digest = params.get("digest");
    document.title = "Artifact · scalable explorer";
    if (!loc && !digest) {
      page("Artifact", el("p", { class: "muted", text: "Open an artifact from a run, or give ?location=URI or ?digest=SHA256." }));
      ready("artifact-empty");
      return;
    }
    const data = await api("artifact", { location: loc, digest: digest });
    const title = loc ? `Versions at ${loc}` : `Version ${short(digest)}`;
    const sections = data.versions.map((v, i) => {
      const getIt = v.current_at.length
        ? el("div", {},
          el("ul", {}, v.current_at.map((where) => el("li", {}, downloadLink(where, v.digest), v.current_at.length > 1 || !loc ? el("span", { class: "muted mono break", text: ` from ${where}` }) : null))),
          el("span", { class: "muted", text: "Checked against the digest as it is sent." }))
        : v.digest ? el("span", { class: "muted", text: "not at its location any more: a newer version or a deletion replaced it" }) : null;
      return el(
        "section",
        { class: "panel", "aria-label": `Version ${short(v.digest) || "without digest"}`, dataset: { digest: v.digest || "" } },
        el("h2", {}, `${loc ? `Version ${i + 1}: ` : ""}`, v.digest ? el("span", { class: "mono", text: short(v.digest) }) : "no digest",
          loc && data.current === v.digest && v.digest ? el("span", {}, " ", badge("current", "ok")) : null),
        facts([
          ["Digest", v.digest ? el("span", { class: "mono" }, v.digest, " ", copyButton(v.digest, "digest")) : null],
          ["Name", v.name],
          ["Kind", v.kind],
          ["Size", v.size_bytes === null ? null : `${bytes(v.size_bytes)} (${v.size_bytes} bytes)`],
          ["Seen", `${time(v.first_seen)} … ${time(v.last_seen)}`],
          ["Locations", el("ul", {}, v.locations.map((l) => el("li", {}, el("a", { href: "/artifact" + query({ location: l }), class: "mono break", text: l }))))],
          ["Get it", getIt],
          ["Lineage", v.digest ? el("a", { href: "/lineage" + query({ node: v.digest, direction: "both", depth: 2 }), text: "graph around this version" }) : null],
          ["Came from", edgeList(v.came_from, "src")],
          ["Went to", edgeList(v.went_to, "dst")],
        ]),
        table([
          { title: "Time", cell: (e) => time(e.timestamp) },
          { title: "Op", cell: (e) => e.op },
          { title: "Run", cell: (e) => runLink(e.run_id) },
          { title: "Task", cell: (e) => e.task_name || "" },
          { title: "Location", class: "break mono", cell: (e) => e.location || "" },
        ], v.events, { caption: "Events of this version" })
      );
    });
    page(title, el("p", { class: "muted", text: `${data.versions.length} version(s), oldest first.` }), ...sections);
    ready("artifact");
  }

  // --- lineage -------------------------------------------------------------------------------

  // The graph libraries (vendored, pinned) are loaded by the lineage page only.
  const GRAPH_SCRIPTS = ["/static/vendor/cytoscape/cytoscape.min.js", "/static/vendor/cytoscape-dagre/cytoscape-dagre.min.js"];

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = el("script", { src: src });
      script.addEventListener("load", resolve);
      script.addEventListener("error", () => reject(new ApiError(`error: the graph library ${src} did not load`, 500)));
      document.head.append(script);
    });
  }

  async function graphLibraries() {
    for (const src of GRAPH_SCRIPTS) {
      if (!document.querySelector(`script[src="${src}"]`)) await loadScript(src);
    }
  }

  function graphStyle() {
    const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    const fg = dark ? "#e6edf3" : "#1b1f24";
    return [
      { selector: "node", style: { label: "data(short)", "font-size": 10, color: fg, "text-wrap": "wrap", "text-max-width": 150, "text-valign": "bottom", "text-margin-y": 4, "background-color": "#cfe3ff", "border-width": 1.5, "border-color": "#0550ae", width: 26, height: 26 } },
      { selector: "node[kind = 'run']", style: { shape: "round-rectangle", "background-color": "#e5e7eb", "border-color": "#57606a", width: 34, height: 20 } },
      { selector: "node[status = 'failed']", style: { "border-color": "#b42318", "border-width": 3 } },
      { selector: "node.group", style: { shape: "barrel", "background-color": "#fde7c6", "border-color": "#8a5a00", width: 44, height: 30, "font-weight": "bold" } },
      { selector: "node.root", style: { "border-width": 5, "border-color": "#0969da" } },
      { selector: "node:selected", style: { "overlay-opacity": 0.15, "overlay-color": "#0969da" } },
      { selector: "edge", style: { width: 1.3, "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.8, "line-color": "#8c959f", "target-arrow-color": "#8c959f", label: "data(label)", "font-size": 8, color: dark ? "#9198a1" : "#57606a", "text-rotation": "autorotate", "text-background-color": dark ? "#0d1117" : "#ffffff", "text-background-opacity": 0.8 } },
      { selector: "edge[relation = 'derived_from']", style: { "line-color": "#0969da", "target-arrow-color": "#0969da", width: 2 } },
      { selector: "edge[relation = 'generated']", style: { "line-style": "dashed" } },
      { selector: "edge[relation = 'reused']", style: { "line-color": "#8250df", "target-arrow-color": "#8250df" } },
      { selector: "edge.context", style: { opacity: 0.45, width: 1 } },
    ];
  }

  // A large graph is drawn as groups: by distance from the start, then run, then task. Each
  // group path is a prefix of the next level's; opening a group shows its members one level down.
  const LEVELS = [
    { key: (n) => `d${n.depth === null || n.depth === undefined ? "?" : n.depth}`, label: (n) => (n.depth ? `${n.depth} step(s) away` : "the start") },
    { key: (n) => `r${n.run || "-"}`, label: (n) => (n.run ? `run ${n.run}` : "no run") },
    { key: (n) => `t${n.task || "-"}`, label: (n) => (n.task ? `task ${n.task}` : "no task") },
  ];
  const GROUPS_WANTED = 150;
  // Above this many nodes, "Show every node" is not offered: the layout would take minutes here.
  const SHOW_ALL_MAX = 600;

  function groupPath(n, level) {
    return LEVELS.slice(0, level + 1).map((l) => l.key(n)).join("|");
  }

  function startLevel(data) {
    // The finest level whose groups are few enough to draw at once.
    let chosen = 0;
    for (let level = 0; level < LEVELS.length; level++) {
      const paths = new Set(data.nodes.map((n) => groupPath(n, level)));
      if (paths.size <= GROUPS_WANTED) chosen = level;
    }
    return chosen;
  }

  function buildElements(data, view) {
    const kinds = new Map(data.nodes.map((n) => [n.id, n.kind]));
    const rep = new Map();
    const groups = new Map();
    const nodes = [];
    if (view.collapsed) {
      const sizes = new Map();
      for (const n of data.nodes) {
        for (let level = view.level; level < LEVELS.length; level++) {
          const path = groupPath(n, level);
          sizes.set(path, (sizes.get(path) || 0) + 1);
        }
      }
      for (const n of data.nodes) {
        if (n.id === data.root) continue;
        for (let level = view.level; level < LEVELS.length; level++) {
          const path = groupPath(n, level);
          if (view.opened.has(path) || sizes.get(path) < 2) continue;
          rep.set(n.id, "group:" + path);
          const g = groups.get(path) || { path: path, level: level, sample: n, count: 0, kinds: {} };
          g.count += 1;
          g.kinds[n.kind] = (g.kinds[n.kind] || 0) + 1;
          groups.set(path, g);
          break;
        }
      }
    }
    for (const n of data.nodes) {
      if (rep.has(n.id)) continue;
      rep.set(n.id, n.id);
      const label = n.label || n.id;
      nodes.push({ group: "nodes", classes: n.id === data.root ? "root" : "", data: { ...n, id: n.id, short: label.length > 48 ? label.slice(0, 45) + "…" : label } });
    }
    for (const g of groups.values()) {
      const where = LEVELS.slice(0, g.level + 1).map((l) => l.label(g.sample)).reverse().join(", ");
      const parts = Object.entries(g.kinds).map(([k, n]) => `${n} ${k}${n === 1 ? "" : "s"}`).join(", ");
      nodes.push({ group: "nodes", classes: "group", data: { id: "group:" + g.path, path: g.path, kind: "group", count: g.count, depth: g.sample.depth, label: `${where}: ${parts}`, short: `${LEVELS[g.level].label(g.sample)}\n${g.count} nodes` } });
    }
    const edges = [];
    if (!groups.size) {
      const labelled = data.edges.length <= 40;
      data.edges.forEach((e, i) => {
        const context = kinds.get(e.src) === "run" || kinds.get(e.dst) === "run";
        edges.push({ group: "edges", classes: context ? "context" : "", data: { id: "e" + i, source: e.src, target: e.dst, relation: e.relation, run_id: e.run_id, task_name: e.task_name, label: labelled && !context ? e.relation : "" } });
      });
    } else {
      const merged = new Map();
      for (const e of data.edges) {
        const s = rep.get(e.src);
        const t = rep.get(e.dst);
        if (!s || !t || s === t) continue;
        const key = `${s}\u0000${t}\u0000${e.relation}`;
        const m = merged.get(key) || { source: s, target: t, relation: e.relation, count: 0, context: kinds.get(e.src) === "run" || kinds.get(e.dst) === "run" };
        m.count += 1;
        merged.set(key, m);
      }
      let i = 0;
      for (const m of merged.values()) {
        edges.push({ group: "edges", classes: m.context ? "context" : "", data: { id: "m" + i++, source: m.source, target: m.target, relation: m.relation, count: m.count, label: m.count > 1 ? `×${m.count}` : "" } });
      }
    }
    return nodes.concat(edges);
  }

  function lineageControls(data) {
    const direction = params.get("direction") || "up";
    const shown = new Set(params.getAll("relation").flatMap((r) => r.split(",")).filter(Boolean));
    const clickMode = params.get("click") || "open";
    return el(
      "form",
      { class: "controls", method: "get", action: "/lineage", "aria-label": "Lineage settings" },
      el("div", {}, el("label", { for: "l-node", text: "Node (digest, location or run id)" }),
        el("input", { id: "l-node", name: "node", value: params.get("node") || "", size: 40, required: true })),
      el("fieldset", {}, el("legend", { text: "Direction" }),
        [["up", "what it came from"], ["down", "what came of it"], ["both", "both"]].map(([v, t]) =>
          el("label", {}, el("input", { type: "radio", name: "direction", value: v, checked: direction === v }), t))),
      el("div", {}, el("label", { for: "l-depth", text: "Depth (blank: all)" }),
        el("input", { id: "l-depth", name: "depth", type: "number", min: 1, max: 1000, value: params.get("depth") || "", size: 5 })),
      data && Object.keys(data.relations).length
        ? el("fieldset", {}, el("legend", { text: "Relations" }),
          Object.entries(data.relations).map(([rel, n]) =>
            el("label", {}, el("input", { type: "checkbox", name: "relation", value: rel, checked: !shown.size || shown.has(rel) }), `${rel} (${n})`)))
        : null,
      el("fieldset", {}, el("legend", { text: "Clicking a node" }),
        [["open", "opens its page"], ["centre", "re-centres the graph on it"]].map(([v, t]) =>
          el("label", {}, el("input", { type: "radio", name: "click", value: v, checked: clickMode === v }), t))),
      el("button", { type: "submit", text: "Show" })
    );
  }

  function recentred(id) {
    const next = new URLSearchParams(location.search);
    next.set("node", id);
    return "/lineage?" + next.toString();
  }

  async function pageLineage() {
    document.title = "Lineage · scalable explorer";
    const node = params.get("node");
    if (!node) {
      page("Lineage", lineageControls(null), el("p", { class: "muted", text: "Give a node: an artifact digest, a location URI or a run id (every run and artifact page links here)." }));
      ready("lineage-empty");
      return;
    }
    const relations = params.getAll("relation").flatMap((r) => r.split(",")).filter(Boolean);
    const [data] = await Promise.all([
      api("lineage", { node: node, direction: params.get("direction") || "up", depth: params.get("depth"), relation: relations }),
      graphLibraries(),
    ]);
    const allChecked = relations.length && Object.keys(data.relations).every((r) => relations.includes(r));
    const clickMode = params.get("click") || "open";
    const rootInfo = data.nodes.find((n) => n.id === data.root) || { label: data.root };
    const summary = el("p", { class: "summary", id: "lineage-summary" },
      `${data.nodes.length} node(s) and ${data.edges.length} edge(s), ${data.direction === "both" ? "both ways" : data.direction === "up" ? "upstream" : "downstream"} from ${rootInfo.label || data.root}` +
        (data.depth ? `, at most ${data.depth} edge(s) away.` : "."));
    const notes = [];
    if (data.truncated) notes.push(el("p", { class: "note", text: `${data.truncated} more node(s) are beyond the limit and not shown; give a smaller depth.` }));
    if (data.unknown_relations.length) notes.push(el("p", { class: "note", text: `No edge of relation ${data.unknown_relations.join(", ")} here.` }));
    const container = el("div", { id: "graph", role: "img", "aria-label": `Lineage graph: ${summary.textContent} The tables below list the same nodes and edges.` });
    const panel = el("aside", { class: "panel", "aria-label": "Selected node" }, el("h2", { text: "Node" }), el("p", { class: "muted", id: "node-info", text: "Point at a node for its details." }));
    const view = { collapsed: data.collapsed, level: startLevel(data), opened: new Set() };
    const groupControls = el("p", { id: "group-controls" });
    page(
      "Lineage",
      lineageControls(data),
      summary,
      ...notes,
      groupControls,
      el("div", { class: "legend", "aria-hidden": "true" },
        el("span", { class: "l-root", text: "where it starts" }), el("span", { class: "l-artifact", text: "artifact version" }),
        el("span", { class: "l-run", text: "run (context, below the flow)" }), el("span", { class: "l-group", text: "group (distance, run, task): click to open it" }),
        el("span", { class: "l-derived", text: "derived from" }), el("span", { class: "l-generated", text: "generated" }), el("span", { class: "l-used", text: "used" }), el("span", { class: "l-reused", text: "reused" })),
      el("div", { class: "graph-area" }, container, panel),
      el("details", {}, el("summary", { text: "The same nodes and edges as tables" }),
        table([
          { title: "Node", cell: (n) => el("a", { href: nodeHref(n.id, n.kind), text: n.label || n.id }) },
          { title: "Kind", cell: (n) => n.kind || "" },
          { title: "Depth", num: true, cell: (n) => (n.depth === null || n.depth === undefined ? "" : String(n.depth)) },
          { title: "Id", class: "mono break", cell: (n) => n.id },
          { title: "", cell: (n) => (n.id === data.root ? "" : el("a", { href: recentred(n.id), text: "centre the graph here" })) },
        ], data.nodes, { id: "lineage-nodes", caption: "Nodes" }),
        table([
          { title: "From", class: "mono break", cell: (e) => e.src },
          { title: "Relation", cell: (e) => e.relation },
          { title: "To", class: "mono break", cell: (e) => e.dst },
          { title: "Run", cell: (e) => runLink(e.run_id) },
        ], data.edges, { id: "lineage-edges", caption: "Edges" }))
    );
    if (allChecked) for (const box of main.querySelectorAll("input[name=relation]")) box.checked = true;
    if (typeof window.cytoscape !== "function") throw new ApiError("error: the graph library did not load (static/vendor)", 500);
    const cy = window.cytoscape({
      container: container,
      elements: buildElements(data, view),
      style: graphStyle(),
      wheelSensitivity: 0.3,
      minZoom: 0.05,
      maxZoom: 3,
      boxSelectionEnabled: false,
    });
    window.scalableGraph = cy;
    const layout = () => {
      container.dataset.ready = "";
      const started = performance.now();
      // Data flow is laid out left to right; runs are context, set in a lane below the flow.
      const runs = cy.nodes("[kind = 'run']").not(".root");
      const flow = cy.elements().not(runs).not(runs.connectedEdges());
      const run = (flow.nodes().length ? flow : cy.elements()).layout({ name: "dagre", rankDir: "LR", nodeSep: 16, rankSep: 90, edgeSep: 8, nodeDimensionsIncludeLabels: true, animate: false, fit: false });
      run.one("layoutstop", () => {
        if (flow.nodes().length && runs.length) placeContext(runs, flow);
        cy.fit(undefined, 24);
        container.dataset.layoutMs = String(Math.round(performance.now() - started));
        container.dataset.nodes = String(cy.nodes().length);
        container.dataset.readyMs = String(performance.now());
        container.dataset.ready = "1";
        performance.mark("scalable-graph-ready");
      });
      run.run();
    };
    const placeContext = (runs, flow) => {
      const box = flow.nodes().boundingBox();
      const placed = runs.map((r) => {
        const near = r.neighborhood("node").not(runs);
        const x = near.length ? near.reduce((sum, n) => sum + n.position("x"), 0) / near.length : box.x1;
        return { node: r, x: x };
      }).sort((p, q) => p.x - q.x);
      let last = -Infinity;
      for (const p of placed) {
        const x = Math.max(p.x, last + 190);
        p.node.position({ x: x, y: box.y2 + 90 });
        last = x;
      }
    };
    const redraw = () => {
      cy.elements().remove();
      cy.add(buildElements(data, view));
      layout();
      renderGroupControls();
    };
    function renderGroupControls() {
      groupControls.replaceChildren();
      if (!data.collapsed) return;
      const groupCount = cy.nodes(".group").length;
      const grouped = cy.nodes(".group").reduce((sum, g) => sum + g.data("count"), 0);
      groupControls.append(...[
        view.collapsed
          ? `${data.nodes.length} nodes are too many to draw one by one: ${groupCount} group(s) (by distance, run and task) stand for ${grouped} of them; click a group to open it. `
          : "Every node is shown. ",
        view.collapsed && data.nodes.length > SHOW_ALL_MAX
          ? el("span", { class: "muted", text: `(Drawing all ${data.nodes.length} at once would take long; open groups, or narrow the depth or relations.) ` })
          : null,
        view.collapsed && view.opened.size ? el("button", { type: "button", class: "secondary", id: "collapse-all", onclick: () => { view.opened.clear(); redraw(); } }, "Close every group") : null,
        " ",
        !view.collapsed || data.nodes.length <= SHOW_ALL_MAX
          ? el("button", { type: "button", class: "secondary", id: view.collapsed ? "expand-all" : "regroup", onclick: () => {
            view.collapsed = !view.collapsed;
            view.opened.clear();
            redraw();
          } }, view.collapsed ? "Show every node" : "Collapse into groups")
          : null,
      ].filter((part) => part !== null));
    }
    renderGroupControls();
    cy.on("mouseover", "node", (event) => {
      const d = event.target.data();
      const info = panel.querySelector("#node-info") || panel.lastChild;
      info.replaceChildren(facts([
        ["Label", d.label],
        ["Kind", d.kind === "artifact" && d.artifact_kind ? `artifact (${d.artifact_kind})` : d.kind],
        ["Id", d.kind === "group" ? null : el("span", { class: "mono break", text: d.id })],
        ["Size", d.size_bytes !== undefined && d.size_bytes !== null ? bytes(d.size_bytes) : null],
        ["Status", d.status],
        ["Project", d.project],
        ["Locations", d.locations && d.locations.length ? d.locations.join("\n") : null],
        ["Runs", Array.isArray(d.runs) && d.runs.length ? d.runs.join(", ") : null],
        ["Depth", d.depth],
        ["Run", d.kind === "run" || d.kind === "group" ? null : d.run],
        ["Task", d.task],
        ["Stands for", d.kind === "group" ? `${d.count} nodes` : null],
      ]));
    });
    cy.on("tap", "node", (event) => {
      const d = event.target.data();
      if (d.kind === "group") {
        view.opened.add(d.path);
        announce(`Opened the group ${d.label}.`);
        redraw();
        return;
      }
      if (clickMode === "centre") {
        location.href = recentred(d.id);
      } else {
        location.href = nodeHref(d.id, d.kind);
      }
    });
    layout();
    ready("lineage");
  }

  // --- audit ---------------------------------------------------------------------------------

  function auditReport(report, title) {
    return el(
      "section",
      { "aria-labelledby": "h-report", id: "audit-report", dataset: { ok: report.ok ? "1" : "0" } },
      el("h2", { id: "h-report" }, `${title}: `, report.ok ? badge("ok") : badge(`FAILED: ${report.problems.length} problem(s)`, "failed")),
      el("p", { class: "summary", text: `${report.runs} run(s), ${report.events} event(s), ${report.artifacts} artifact(s) checked.` }),
      report.problems.length
        ? table([
          { title: "Run", cell: (p) => runLink(p.run_id) },
          { title: "Where", class: "mono break", cell: (p) => p.where },
          { title: "Problem", cell: (p) => p.kind },
          { title: "Detail", cell: (p) => p.message },
          { title: "Expected", class: "mono break", cell: (p) => p.expected || "" },
          { title: "Found", class: "mono break", cell: (p) => p.found || "" },
        ], report.problems, { id: "audit-problems", caption: "Problems" })
        : null
    );
  }

  async function pageAudit() {
    document.title = "Audit · scalable explorer";
    const run = params.get("run");
    const structural = el("div", { id: "structural" }, el("p", { class: "muted", text: "Checking every line, chain and seal…" }));
    const content = el("div", { id: "content" });
    const button = el("button", { type: "button", id: "content-audit", text: "Check the stored bytes" });
    page(
      run ? `Audit of ${run}` : "Audit",
      el("form", { class: "controls", method: "get", action: "/audit" },
        el("div", {}, el("label", { for: "a-run", text: "Only this run (blank: every run)" }), el("input", { id: "a-run", name: "run", value: run || "", size: 40 })),
        el("button", { type: "submit", text: "Audit" })),
      el("p", { class: "muted", text: "Structure: every line parses, every writer's chain holds, seals match. Content, on request: the latest artifact at every location still hashes to its digest." }),
      structural,
      el("h2", { text: "Stored bytes" }),
      el("p", {}, button),
      content
    );
    button.addEventListener("click", async () => {
      button.disabled = true;
      const bar = el("progress", { id: "content-progress", "aria-label": "Artifacts checked" });
      const label = el("p", { id: "content-count", text: "Starting…" });
      content.replaceChildren(bar, label);
      try {
        const response = await fetch("/api/audit/stream" + query({ content: 1, run: run }));
        if (!response.ok) {
          const data = await response.json();
          throw new ApiError(data.error, response.status);
        }
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        const phases = { streams: "bytes of streams read", compacted: "compacted runs checked", artifacts: "stored artifacts re-hashed" };
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n")) >= 0) {
            const message = JSON.parse(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 1);
            if (message.event === "progress") {
              bar.max = Math.max(1, message.total);
              bar.value = Math.min(message.done, bar.max);
              bar.dataset.phase = message.phase;
              label.textContent = `${phases[message.phase] || message.phase}: ${message.done} of ${message.total}`;
            } else if (message.event === "done") {
              bar.value = bar.max;
              content.replaceChildren(auditReport(message.report, "Structure and stored bytes"));
              announce(message.report.ok ? "The content audit found no problem." : `The content audit found ${message.report.problems.length} problem(s).`);
            } else if (message.event === "error") {
              content.replaceChildren(el("p", { class: "alert", role: "alert", text: message.error }));
            }
          }
        }
      } catch (err) {
        content.replaceChildren(el("p", { class: "alert", role: "alert", text: err.message }));
      } finally {
        button.disabled = false;
        main.dataset.content = "1";
      }
    });
    try {
      const report = await api("audit", { run: run, content: 0 });
      const section = auditReport(report, "Structure");
      section.id = "structure-report";
      structural.replaceChildren(section);
    } catch (err) {
      structural.replaceChildren(el("p", { class: "alert", role: "alert", text: err.message }));
    }
    ready("audit");
  }

  // --- SQL -----------------------------------------------------------------------------------

  function cell(value) {
    if (value === null || value === undefined) return el("span", { class: "muted", text: "NULL" });
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  async function pageSql() {
    document.title = "SQL · scalable explorer";
    const sql = params.get("q") || "";
    const asOf = params.get("as_of") || "";
    const textarea = el("textarea", { id: "sql", name: "q", spellcheck: "false", "aria-describedby": "sql-help" }, sql || "SELECT * FROM runs ORDER BY started_at DESC LIMIT 20");
    const form = el(
      "form",
      { class: "controls", method: "get", action: "/sql", id: "sql-form" },
      el("div", { style: null }, el("label", { for: "sql", text: "Read-only SQL over events, artifacts, cache, tasks, runs, lineage" }), textarea,
        el("p", { id: "sql-help", class: "muted", text: "Only SELECT-like statements run (as in scalable ledger query). Ctrl+Enter runs it." })),
      el("div", {}, el("label", { for: "as-of", text: "As of (ISO-8601, optional)" }), el("input", { id: "as-of", name: "as_of", value: asOf, size: 26 })),
      el("button", { type: "submit", id: "run-sql", text: "Run" })
    );
    form.firstChild.style.flex = "1 1 100%";
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
    });
    const result = el("section", { id: "sql-result", "aria-live": "polite" });
    const recipes = el("section", { "aria-labelledby": "h-cookbook" }, el("h2", { id: "h-cookbook", text: "Cookbook" }));
    page("SQL", form, result, recipes);
    const book = await api("cookbook");
    recipes.append(el("ul", { class: "recipes" }, book.map((r) =>
      el("li", {}, el("a", { href: "/sql" + query({ q: r.sql, as_of: r.as_of }), text: r.title }), el("code", { text: r.sql + (r.as_of ? `   (as of ${r.as_of})` : "") })))));
    if (sql) {
      try {
        const data = await api("sql", { q: sql, as_of: asOf });
        const downloads = ["csv", "json"].map((fmt) => el("a", { href: "/api/sql" + query({ q: sql, as_of: asOf, format: fmt }), class: "button secondary", download: "", text: `Download ${fmt.toUpperCase()}` }));
        result.replaceChildren(
          el("p", { class: "summary", id: "sql-count" }, `${data.row_count} row(s)${data.truncated ? `, the first ${data.rows.length} shown` : ""}. `, ...downloads.flatMap((d) => [d, " "])),
          table(data.columns.map((c, i) => ({ title: c, cell: (row) => cell(row[i]) })), data.rows, { id: "sql-table", caption: "Query result", empty: "No rows." })
        );
      } catch (err) {
        result.replaceChildren(el("p", { class: "alert", role: "alert", id: "sql-error", text: err.message }));
      }
    }
    ready("sql");
  }

  // --- routing -------------------------------------------------------------------------------

  function route() {
    const path = location.pathname.replace(/\/+$/, "") || "/runs";
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const section = parts[0] || "runs";
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    }
    if (section === "runs" && parts.length === 1) return pageRuns();
    if (section === "runs" && parts.length === 2) return pageRun(parts[1]);
    if (section === "compare") return pageCompare(parts[1] || params.get("a"), parts[2] || params.get("b"));
    if (section === "artifact") return pageArtifact();
    if (section === "lineage") return pageLineage();
    if (section === "audit") return pageAudit();
    if (section === "sql") return pageSql();
    throw new ApiError(`error: no page at ${location.pathname}`, 404);
  }

  Promise.resolve().then(route).catch(fail);
})();
