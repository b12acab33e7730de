// The experiments page: a client of the board's JSON API (or, in a static export, of the snapshot of its
// answers in snapshot.js). The view's state (view, query, filters, sort, selection, compare options) lives in
// the URL's hash, so a link reproduces a view.
(function () {
  "use strict";

  const $ = (selector) => document.querySelector(selector);
  const SNAPSHOT = window.BOARD_SNAPSHOT || null;
  const PALETTE = ["#2255cc", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d6a9f", "#e07a5f", "#3d405b",
                   "#81b29a", "#f2cc8f", "#5e548e", "#9a031e"];
  const DEFAULT_COLUMNS = ["id", "source", "dirty", "date", "message", "labels", "data", "model", "metric", "value", "accuracy"];
  const CURVES = ["train_loss", "val_loss", "train_accuracy", "val_accuracy"];
  const MAX_DIFF_CHARS = 200000; // as board/views.py
  const COMPARE_EMPTY = document.querySelector("#compare-empty").textContent;

  let table = null; // {columns, rows, total}
  let comparison = null;
  let shownIds = new Set(); // the rows the table shows now: actions act on the selected ones among them

  // --- state in the URL -----------------------------------------------------------------------------------
  function readState() {
    const [view, query] = (location.hash.replace(/^#\/?/, "") || "table").split("?");
    const params = new URLSearchParams(query || "");
    const filters = {};
    for (const [key, value] of params) if (key.startsWith("f.")) filters[key.slice(2)] = value;
    return {
      view: ["table", "compare", "run", "pad"].includes(view) ? view : "table",
      q: params.get("q") || "",
      sort: params.get("sort") || "",
      desc: params.get("desc") === "1",
      hidden: params.get("hidden") === "1",
      codeOnly: params.get("code") === "1",
      selected: (params.get("ids") || "").split(",").filter(Boolean),
      baseline: params.get("baseline") || "",
      changed: params.get("changed") !== "0",
      smooth: Number(params.get("smooth") || 0),
      log: params.get("log") === "1",
      model: params.get("model") || "",
      experiment: params.get("experiment") || "",
      filters,
    };
  }

  function writeState(state, replace = true) {
    const params = new URLSearchParams();
    if (state.q) params.set("q", state.q);
    if (state.sort) params.set("sort", state.sort);
    if (state.desc) params.set("desc", "1");
    if (state.hidden) params.set("hidden", "1");
    if (state.codeOnly) params.set("code", "1");
    if (state.selected.length) params.set("ids", state.selected.join(","));
    if (state.baseline) params.set("baseline", state.baseline);
    if (!state.changed) params.set("changed", "0");
    if (state.smooth) params.set("smooth", String(state.smooth));
    if (state.log) params.set("log", "1");
    if (state.model) params.set("model", state.model);
    if (state.experiment) params.set("experiment", state.experiment);
    for (const [column, value] of Object.entries(state.filters)) if (value) params.set(`f.${column}`, value);
    const query = params.toString().replace(/%2C/gi, ","); // commas need no escaping in a fragment
    const hash = `#/${state.view}${query ? "?" + query : ""}`;
    if (hash !== location.hash) {
      if (replace) history.replaceState(null, "", hash);
      else history.pushState(null, "", hash);
    }
  }

  // --- the API (or the export's snapshot of it) -----------------------------------------------------------
  // A static export compares any selection of its table: what the API's compare answers, put together from
  // the snapshot's rows, what each comparison draws from (curves, confusion counts) and each metric's
  // direction (ExperimentsBoard.compare in board/views.py does the same; the browser tests hold them equal).
  // Code diffs: git's for the comparison the export was made for; for any other, diff.js diffs the code
  // files the snapshot holds (/export/code). Null: not possible here.
  function assembleComparison(ids, baseline) {
    const drawn = SNAPSHOT["/export/drawn-from"], directions = SNAPSHOT["/export/directions"];
    const table = SNAPSHOT["/api/experiments?hidden=1&code_only=1"];
    if (!drawn || !directions || !table || ids.length < 2) return null;
    const runs = (SNAPSHOT["/api/runs"] || { rows: [] }).rows;
    const byId = new Map(table.rows.concat(runs).map((row) => [row.id, row]));
    const rows = ids.map((id) => byId.get(id));
    const base = baseline ? byId.get(baseline) : rows[0];
    if (!base || rows.some((row) => !row || !drawn[row.id])) return null;
    if (!rows.includes(base)) rows.unshift(base);
    const sideBySide = (prefix) => {
      const keys = [...new Set(rows.flatMap((row) => Object.keys(row).filter((key) => key.startsWith(prefix))))].sort();
      return keys.map((key) => [key.slice(prefix.length), rows.map((row) => (key in row ? row[key] : null))]);
    };
    const baseIndex = rows.indexOf(base);
    const metrics = {};
    for (const [key, values] of sideBySide("metrics.")) {
      const reference = values[baseIndex];
      const direction = directions[key] || "higher";
      const deltas = values.map((value) => (typeof value === "number" && typeof reference === "number" ? value - reference : null));
      const verdicts = deltas.map((delta) => (delta === null ? null : delta === 0 ? "same" : (delta > 0) === (direction === "higher") ? "better" : "worse"));
      metrics[key] = { values, deltas, verdicts, direction };
    }
    const params = {};
    for (const [key, values] of sideBySide("params.")) {
      // as _param_view: a key an experiment's params.yaml lacks is absent, not null, and going from one
      // to the other is a change
      const absent = rows.map((row) => !(`params.${key}` in row));
      const seen = new Set(values.map((value, i) => (absent[i] ? "(absent)" : JSON.stringify(value))));
      params[key] = { values, absent, changed: seen.size > 1 };
    }
    const code = SNAPSHOT["/export/code"];
    const note = "this static export holds no copy of the code files (too large): only the comparison it " +
      "was made for has a code diff (mnist-lab board --export DIR --compare a,b); open the live board for this one";
    const diff = (row) => {  // as ExperimentsBoard._diff answers
      if (!base.commit || !row.commit) return { text: "", truncated: false, note: "a run without a recorded commit: no diff" };
      const missing = code && [base.commit, row.commit].find((commit) => !(commit in code.commits));
      if (missing) return { text: "", truncated: false, note: `commit ${missing.slice(0, 12)} is not in this clone (\`git fetch\` it): no diff` };
      const text = code ? window.MnistDiff.codeDiff(code, base.commit, row.commit) : null;
      if (text === null) return { text: "", truncated: false, note };
      return { text: text.slice(0, MAX_DIFF_CHARS), truncated: text.length > MAX_DIFF_CHARS };
    };
    return {
      experiments: rows.map((row) => row.id),
      baseline: base.id,
      rows,
      params,
      metrics,
      curves: Object.fromEntries(rows.map((row) => [row.id, drawn[row.id].curves])),
      confusion: Object.fromEntries(rows.map((row) => [row.id, drawn[row.id].confusion])),
      diffs: Object.fromEntries(rows.filter((row) => row !== base).map((row) => [row.id, diff(row)])),
    };
  }

  async function api(path, options) {
    if (SNAPSHOT) {
      if (path in SNAPSHOT) return SNAPSHOT[path];
      if (path.startsWith("/api/compare?")) {
        // the export holds one comparison (with git's diffs): shown for the same experiments in the same
        // order against the same baseline, as the API would answer; any other is put together here
        const query = new URLSearchParams(path.split("?")[1]);
        const ids = query.get("ids").split(",");
        const baseline = query.get("baseline") || ids[0];
        const order = (ids.includes(baseline) ? ids : [baseline, ...ids]).join(",");
        const held = Object.keys(SNAPSHOT).find((key) => key.startsWith("/api/compare?") &&
          SNAPSHOT[key].experiments.join(",") === order && SNAPSHOT[key].baseline === baseline);
        if (held) return SNAPSHOT[held];
        const assembled = assembleComparison(query.get("ids").split(","), query.get("baseline"));
        if (assembled) return assembled;
      }
      throw new Error(`this static export does not hold ${path}: open the live board (mnist-lab board)`);
    }
    const request = Object.assign({}, options);
    if (request.method === "POST") request.headers = Object.assign({ "X-Mnist-Lab": "board" }, request.headers);
    const answer = await fetch(path, request);
    const body = await answer.json().catch(() => ({ error: `${answer.status} ${answer.statusText}` }));
    if (!answer.ok) throw new Error(body.error || JSON.stringify(body.detail || body));
    return body;
  }

  function status(text) { $("#status").textContent = text; }

  function escapeHtml(value) {
    return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function colour(id, ids) {
    // by the experiment's place in the comparison (or the selection): no two of up to 12 share a colour,
    // and the table's swatches show the colours its selection will have in the comparison
    const index = ids.indexOf(id);
    return PALETTE[(index < 0 ? 0 : index) % PALETTE.length];
  }

  function shortId(id) { return id.startsWith("exp:") ? id : id.startsWith("run:") ? id.slice(0, 12) : id.slice(0, 8); }

  function formatValue(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number") {
      // six significant digits, written as JavaScript writes that number (no trailing zeros, an exponent
      // only past 1e21 or below 1e-6): 123000.4 is 123000, 1234567.5 is 1234570, 1.5e-7 stays 1.5e-7
      return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
    }
    if (Array.isArray(value)) return `[${value.map(formatValue).join(", ")}]`;
    return String(value);
  }

  // --- table ----------------------------------------------------------------------------------------------
  function columnFilter(column, text) {
    // a column filter is a comparison when it starts with an operator (`> 0.97`), else "contains"
    const match = /^\s*(==|!=|<=|>=|!~|=|<|>|~)\s*(.*)$/.exec(text);
    const operator = match ? match[1] : "~";
    const raw = match ? match[2] : text;
    if (match && raw.trim() === "") return () => true; // an operator alone (still typing): no filter yet
    const number = Number(raw);
    const operand = raw.trim() !== "" && !Number.isNaN(number) && !operator.includes("~") ? number : raw;
    if (typeof operand === "string" && match && !operator.includes("~") && table.numeric.includes(column)) {
      // as the query: a word compared with numbers keeps nothing, so say so rather than empty the table
      filterProblems[column] = `${column} holds numbers: compare it with a number (or match text with ~)`;
      return () => true;
    }
    return (row) => MnistQuery.compare(row[column] === undefined ? null : row[column], operator, operand);
  }

  let filterProblems = {}; // column -> why its filter is ignored (shown on the filter's input)
  let hiddenMatching = 0; // rows the query and filters keep that are left out for their `hidden` label
  let codeOnlyMatching = 0; // and those left out as commits that changed code alone (`code_only`)
  let sortProblem = ""; // why the table is not sorted by the URL's sort column

  function visibleRows(state) {
    const columns = table.columns;
    if (table.numericOf !== table.rows) { // the rows are replaced, never changed in place
      table.numeric = MnistQuery.numericColumns(table.rows);
      table.numericOf = table.rows;
    }
    let keep;
    try {
      keep = MnistQuery.parseQuery(state.q, columns, table.numeric);
      $("#query-error").hidden = true;
    } catch (error) {
      $("#query-error").textContent = error.message;
      $("#query-error").hidden = false;
      keep = () => true;
    }
    filterProblems = {};
    const filters = Object.entries(state.filters).filter(([, text]) => text).map(([c, t]) => columnFilter(c, t));
    let rows = table.rows.filter((row) => keep(row) && filters.every((f) => f(row)));
    const unhidden = rows.filter((row) => state.hidden || !row.labels.includes("hidden"));
    hiddenMatching = rows.length - unhidden.length;
    const shown = unhidden.filter((row) => state.codeOnly || !row.code_only);
    codeOnlyMatching = unhidden.length - shown.length;
    rows = shown;
    // a link from before a column went (or a hand-edited one): said, as /api/experiments refuses it
    sortProblem = state.sort && !columns.includes(state.sort) && !table.runsPending ? `no column ${state.sort} to sort by: unsorted` : "";
    if (state.sort && !sortProblem) {
      const present = rows.filter((r) => r[state.sort] !== null && r[state.sort] !== undefined);
      const absent = rows.filter((r) => r[state.sort] === null || r[state.sort] === undefined);
      present.sort((a, b) => {  // the API's order (a column mixing numbers and words included)
        const order = MnistQuery.sortOrder(a[state.sort], b[state.sort]);
        return state.desc ? -order : order;
      });
      rows = present.concat(absent);
    }
    return rows;
  }

  function refused(id) {
    // why Apply & commit would refuse this DVC experiment (HEAD changed its inputs since), or null
    return (table.rows.find((r) => r.id === id) || {}).apply_refused || null;
  }

  function actionable(state) {
    // the selected rows the table shows: a row a filter, the query or `hidden` hides is left out of actions
    return state.selected.filter((id) => shownIds.has(id));
  }

  let varying = null;
  function shownColumns() {
    // the headline columns, then every param whose value is not the same in all experiments
    if (!varying || varying.rows !== table.rows) {
      const values = new Map();
      for (const row of table.rows) for (const [key, value] of Object.entries(row)) {
        if (!key.startsWith("params.")) continue;
        if (!values.has(key)) values.set(key, new Set());
        values.get(key).add(JSON.stringify(value));
      }
      const keys = [...values].filter(([, seen]) => seen.size > 1).map(([key]) => key);
      varying = { rows: table.rows, columns: DEFAULT_COLUMNS.concat(keys.sort()) };
    }
    return varying.columns;
  }

  function renderTable(state) {
    const started = performance.now();
    const columns = shownColumns();
    const head = $("#experiments thead");
    if (!head.dataset.columns || head.dataset.columns !== columns.join("|")) {
      head.dataset.columns = columns.join("|");
      head.innerHTML =
        `<tr><th></th>${columns.map((c) => `<th class="sortable" data-column="${escapeHtml(c)}" aria-sort="none"><button type="button" class="sort" title="sort by ${escapeHtml(c)}">${escapeHtml(c.replace(/^params\./, ""))} <span class="arrow" aria-hidden="true"></span></button></th>`).join("")}</tr>` +
        `<tr class="filters"><th></th>${columns.map((c) => `<th><input data-filter="${escapeHtml(c)}" placeholder="filter" aria-label="filter ${escapeHtml(c)}"></th>`).join("")}</tr>`;
    }
    for (const th of head.querySelectorAll("th.sortable")) {
      const sorted = th.dataset.column === state.sort;
      th.querySelector(".arrow").textContent = sorted ? (state.desc ? "▼" : "▲") : "";
      th.setAttribute("aria-sort", sorted ? (state.desc ? "descending" : "ascending") : "none");
    }
    for (const input of head.querySelectorAll("input[data-filter]")) {
      const value = state.filters[input.dataset.filter] || "";
      if (document.activeElement !== input && input.value !== value) input.value = value;
    }
    const rows = visibleRows(state);
    for (const input of head.querySelectorAll("input[data-filter]")) {
      const problem = filterProblems[input.dataset.filter];
      input.classList.toggle("invalid", Boolean(problem));
      input.title = problem || "";
    }
    shownIds = new Set(rows.map((row) => row.id));
    const acting = actionable(state);
    const selected = new Set(state.selected);
    const cells = (row) => columns.map((c) => {
      const value = row[c];
      if (c === "labels") return `<td>${value.map((l) => `<span class="chip ${escapeHtml(l)}">${escapeHtml(l)}</span>`).join("")}</td>`;
      if (c === "id") return `<td class="mono"><span class="swatch" style="${acting.includes(row.id) ? `background:${colour(row.id, acting)}` : ""}"></span>${escapeHtml(shortId(row.id))}</td>`;
      if (c === "source") return `<td class="source">${escapeHtml(value)}</td>`;
      if (c === "dirty") return value ? `<td class="dirty" title="${escapeHtml((row.source === "run" ? "" : "dvc.lock disagrees with: ") + (row.dirty_because || []).join(", "))}">dirty</td>` : "<td></td>";
      if (c === "date") return `<td>${escapeHtml(String(value || "").slice(0, 16).replace("T", " "))}</td>`;
      if (c === "data") return `<td class="mono">${escapeHtml(String(value || "").slice(0, 8))}</td>`;
      if (c === "message") return `<td class="message" title="${escapeHtml(value || "")}">${escapeHtml(value || "")}</td>`;
      // a number is shown with six significant digits: the whole one is its tooltip (what `=` compares)
      const whole = typeof value === "number" && String(value) !== formatValue(value) ? ` title="${escapeHtml(String(value))}"` : "";
      return `<td class="${typeof value === "number" ? "num" : ""}"${whole}>${escapeHtml(formatValue(value))}</td>`;
    }).join("");
    $("#experiments tbody").innerHTML = rows.map((row) =>
      `<tr data-id="${escapeHtml(row.id)}" class="${selected.has(row.id) ? "selected" : ""}">` +
      `<td><input type="checkbox" class="select" ${selected.has(row.id) ? "checked" : ""} aria-label="select ${escapeHtml(row.id)}"></td>${cells(row)}</tr>`
    ).join("");
    const notShown = state.selected.length - acting.length;
    $("#table-summary").textContent = `${rows.length} of ${table.rows.length} experiments` +
      (hiddenMatching ? ` (${hiddenMatching} more labelled hidden: tick hidden to show ${hiddenMatching === 1 ? "it" : "them"})` : "") +
      (codeOnlyMatching ? ` (${codeOnlyMatching} more ${codeOnlyMatching === 1 ? "commit" : "commits"} that changed code alone, with the results of the experiment before: tick code-only to show ${codeOnlyMatching === 1 ? "it" : "them"})` : "") +
      (sortProblem ? ` · ${sortProblem}` : "") + (SNAPSHOT ? " · static export" : "") +
      (notShown ? ` · ${notShown} selected ${notShown === 1 ? "row is" : "rows are"} not shown: the buttons leave ${notShown === 1 ? "it" : "them"} out` : "") +
      (acting.length === 1 && refused(acting[0]) ? ` · Apply & commit: ${refused(acting[0])}` : "");
    $("#compare-selected").disabled = acting.length < 2;
    $("#pad-selected").disabled = Boolean(SNAPSHOT) || acting.length !== 1;
    $("#label-add").disabled = $("#label-remove").disabled = !acting.length || Boolean(SNAPSHOT);
    const why = acting.length === 1 ? refused(acting[0]) : null;
    $("#commit-selected").disabled = Boolean(SNAPSHOT) || acting.length !== 1 || !acting[0].startsWith("exp:") || Boolean(why);
    $("#commit-selected").title = why || "dvc exp apply + mnist-lab commit";
    $("#promote").disabled = Boolean(SNAPSHOT);
    $("#compare-selected").textContent = `Compare selected (${acting.length})`;
    $("#show-hidden").checked = state.hidden;
    $("#show-code-only").checked = state.codeOnly;
    if ($("#query") !== document.activeElement) $("#query").value = state.q;
    document.body.dataset.renderMs = String(Math.round(performance.now() - started));
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
    if (!performance.getEntriesByName("first-table").length) performance.mark("first-table");
  }

  // --- compare --------------------------------------------------------------------------------------------
  function renderCompare(state) {
    const data = comparison;
    const ids = data.experiments;
    const rowsById = Object.fromEntries(data.rows.map((r) => [r.id, r]));
    const head = `<tr><th></th>${ids.map((id) => `<th><span class="swatch" style="background:${colour(id, ids)}"></span>${escapeHtml(shortId(id))}${id === data.baseline ? " (baseline)" : ""}</th>`).join("")}</tr>`;
    $("#compare-experiments").innerHTML = head +
      ["message", "date", "source", "model", "metric", "value", "data"].map((key) =>
        `<tr><th>${key}</th>${ids.map((id) => `<td title="${escapeHtml(formatValue(rowsById[id][key]))}">${escapeHtml(formatValue(rowsById[id][key]))}</td>`).join("")}</tr>`).join("") +
      `<tr><th>baseline</th>${ids.map((id) => `<td><input type="radio" name="baseline" value="${escapeHtml(id)}" ${id === data.baseline ? "checked" : ""}></td>`).join("")}</tr>`;
    $("#compare-metrics").innerHTML = head + Object.entries(data.metrics).filter(([key]) => !key.includes("_class_")).map(([key, m]) =>
      `<tr><th class="mono">${escapeHtml(key)}</th>${m.values.map((value, i) => {
        const delta = m.deltas[i];
        const shown = ids[i] === data.baseline || delta === null || delta === 0 ? formatValue(value)
          : `${formatValue(value)} (${delta > 0 ? "+" : ""}${formatValue(delta)})`;
        const whole = typeof value === "number" && String(value) !== formatValue(value) ? ` title="${escapeHtml(String(value))}"` : "";
        return `<td class="num ${m.verdicts[i] === "better" ? "better" : m.verdicts[i] === "worse" ? "worse" : ""}"${whole}>${escapeHtml(shown)}</td>`;
      }).join("")}</tr>`).join("");
    $("#only-changed").checked = state.changed;
    $("#compare-params").innerHTML = head + Object.entries(data.params).filter(([, p]) => !state.changed || p.changed).map(([key, p]) =>
      `<tr><th class="mono">${escapeHtml(key)}</th>${p.values.map((v, i) => (p.absent || [])[i]
        ? `<td class="absent" title="not in this experiment's params.yaml">—</td>`
        : v === null ? `<td class="mono" title="set to null in params.yaml">null</td>` : `<td>${escapeHtml(formatValue(v))}</td>`).join("")}</tr>`).join("");
    const models = [...new Set(ids.flatMap((id) => Object.keys(data.curves[id] || {})))].sort();
    const withCurves = models.filter((m) => ids.some((id) => (data.curves[id][m] || []).length));
    const model = state.model && models.includes(state.model) ? state.model
      : withCurves[0] || rowsById[data.baseline].model || models[0] || "";
    $("#curve-model").innerHTML = models.map((m) => `<option ${m === model ? "selected" : ""}>${escapeHtml(m)}</option>`).join("");
    $("#smoothing").value = String(state.smooth);
    $("#log-scale").checked = state.log;
    $("#curves").innerHTML = CURVES.map((metric) => chart(metric, ids.map((id) => ({
      id, points: ((data.curves[id] || {})[model] || []).map((r) => [r.epoch, r[metric]]),
    })), state)).join("") || "";
    if (!ids.some((id) => ((data.curves[id] || {})[model] || []).length)) {
      $("#curves").innerHTML = `<p class="summary">${escapeHtml(model)} is trained without epochs: no curves.</p>`;
    }
    $("#confusion-model").textContent = `of ${model}`; // the model chosen under Curves
    $("#confusion").innerHTML = ids.map((id) => matrix(id, ((data.confusion[id] || {})[model]), ids)).join("");
    $("#diffs").innerHTML = Object.entries(data.diffs).map(([id, diff]) =>
      `<h3 class="mono">${escapeHtml(shortId(data.baseline))} → ${escapeHtml(shortId(id))}</h3>` +
      (diff.note && !diff.text ? `<p class="summary">${escapeHtml(diff.note)}</p>` : diff.text ? `<pre class="diff">${diff.text.split("\n").map((line) => {
        const kind = line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "";
        return `<span class="${kind}">${escapeHtml(line)}</span>`;
      }).join("\n")}</pre>${diff.truncated ? `<p class='summary'>(truncated: the whole diff is <code>git diff ${escapeHtml(String(rowsById[data.baseline].commit || "").slice(0, 12))} ${escapeHtml(String(rowsById[id].commit || "").slice(0, 12))} -- src params.yaml dvc.yaml</code>)</p>` : ""}` : `<p class="summary">no change in src/, params.yaml or dvc.yaml</p>`)
    ).join("");
  }

  function smooth(points, weight) {
    if (!weight) return points;
    let last = null;
    return points.map(([x, y]) => { last = last === null ? y : last * weight + (1 - weight) * y; return [x, last]; });
  }

  function chart(metric, series, state) {
    const width = 360, height = 220, pad = 36;
    const finite = series.flatMap((s) => s.points.filter(([, y]) => Number.isFinite(y)));
    const dropped = state.log ? finite.filter(([, y]) => y <= 0).length : 0;  // no logarithm: said, not hidden
    const lines = series.map((s) => ({ id: s.id, points: smooth(s.points.filter(([, y]) => Number.isFinite(y) && (!state.log || y > 0)), state.smooth) }))
      .filter((s) => s.points.length);
    if (!lines.length) {
      return dropped ? `<p class="summary">${escapeHtml(metric)}: no value above 0 to draw on a log scale</p>` : "";
    }
    const xs = lines.flatMap((s) => s.points.map((p) => p[0]));
    const ys = lines.flatMap((s) => s.points.map((p) => state.log ? Math.log10(p[1]) : p[1]));
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => pad + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - pad - 8);
    const sy = (y) => height - pad + 10 - ((state.log ? Math.log10(y) : y) - y0) / (y1 - y0) * (height - pad - 8);
    const label = (v) => state.log ? formatValue(Number((10 ** v).toPrecision(2))) : formatValue(Number(v.toPrecision(3)));
    const paths = lines.map((s) =>
      `<polyline fill="none" stroke="${colour(s.id, series.map((x) => x.id))}" stroke-width="1.8" data-experiment="${escapeHtml(s.id)}" points="${s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")}"/>`).join("");
    return `<svg class="chart" data-metric="${metric}" width="${width}" height="${height}" role="img" aria-label="${metric} by epoch">` +
      `<text x="${pad}" y="14">${escapeHtml(metric)}${state.log ? " (log)" : ""}${dropped ? ` (${dropped} point${dropped > 1 ? "s" : ""} ≤ 0 left out)` : ""}</text>` +
      `<text x="4" y="${sy(state.log ? 10 ** y1 : y1) + 4}">${label(y1)}</text><text x="4" y="${sy(state.log ? 10 ** y0 : y0)}">${label(y0)}</text>` +
      `<text x="${pad}" y="${height - 6}">epoch ${x0}</text><text x="${width - 60}" y="${height - 6}">epoch ${x1}</text>` +
      `<line x1="${pad}" y1="${height - pad + 10}" x2="${width - 8}" y2="${height - pad + 10}" stroke="#d9dee7"/>${paths}</svg>`;
  }

  function matrix(id, counts, ids) {
    if (!counts) return `<div><h3 class="mono">${escapeHtml(shortId(id))}</h3><p class="summary">no predictions</p></div>`;
    const max = Math.max(1, ...counts.matrix.flat());
    return `<div><h3 class="mono"><span class="swatch" style="background:${colour(id, ids)}"></span>${escapeHtml(shortId(id))}</h3><table class="matrix" data-experiment="${escapeHtml(id)}">` +
      `<tr><th></th>${counts.labels.map((l) => `<th>${escapeHtml(l)}</th>`).join("")}</tr>` +
      counts.matrix.map((row, i) => `<tr><th>${escapeHtml(counts.labels[i])}</th>${row.map((n, j) => {
        const alpha = n / max;
        const tint = i === j ? `rgba(34,85,204,${alpha})` : `rgba(180,35,24,${Math.min(1, alpha * 3)})`;
        return `<td style="background:${n ? tint : "transparent"};color:${alpha > 0.5 ? "#fff" : "inherit"}">${n || ""}</td>`;
      }).join("")}</tr>`).join("") + "</table></div>";
  }

  // --- digit pad ------------------------------------------------------------------------------------------
  let padModel = null;
  function setupPad() {
    const canvas = $("#pad-canvas");
    const context = canvas.getContext("2d");
    const clear = () => { context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height); };
    clear();
    let drawing = false;
    const at = (event) => {
      const box = canvas.getBoundingClientRect();
      return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
    };
    canvas.addEventListener("pointerdown", (event) => { drawing = true; const [x, y] = at(event); context.beginPath(); context.moveTo(x, y); });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      const [x, y] = at(event);
      context.strokeStyle = "#fff"; context.lineWidth = 22; context.lineCap = "round"; context.lineJoin = "round";
      context.lineTo(x, y); context.stroke();
    });
    const stop = () => { if (drawing) { drawing = false; predict(); } };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointerleave", stop);
    // the keyboard's pen: arrows move it, Space puts it down (a dot) or lifts it (then predicts), Delete clears
    const step = canvas.width / 20, pen = { x: canvas.width / 2, y: canvas.height / 2, down: false };
    const cursor = $("#pad-cursor");
    const showPen = () => {
      cursor.hidden = false;
      cursor.style.left = `${pen.x * canvas.clientWidth / canvas.width}px`;
      cursor.style.top = `${pen.y * canvas.clientHeight / canvas.height}px`;
      cursor.classList.toggle("down", pen.down);
    };
    const ink = (fromX, fromY) => {
      context.strokeStyle = "#fff"; context.lineWidth = 22; context.lineCap = "round"; context.lineJoin = "round";
      context.beginPath(); context.moveTo(fromX, fromY); context.lineTo(pen.x, pen.y); context.stroke();
    };
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    canvas.addEventListener("keydown", (event) => {
      if (event.key in moves) {
        const [dx, dy] = moves[event.key], [fromX, fromY] = [pen.x, pen.y];
        pen.x = Math.min(canvas.width - step / 2, Math.max(step / 2, pen.x + dx * step));
        pen.y = Math.min(canvas.height - step / 2, Math.max(step / 2, pen.y + dy * step));
        if (pen.down) ink(fromX, fromY);
      } else if (event.key === " ") {
        event.preventDefault();
        if (event.repeat) return; // a held Space toggles once, not once per auto-repeat
        pen.down = !pen.down;
        if (pen.down) ink(pen.x, pen.y);
        else predict();
      } else if (event.key === "Delete" || event.key === "Backspace") {
        $("#pad-clear").click();
      } else return;
      event.preventDefault();
      showPen();
    });
    canvas.addEventListener("focus", () => { if (canvas.matches(":focus-visible")) showPen(); });
    canvas.addEventListener("blur", () => { cursor.hidden = true; });
    $("#pad-clear").addEventListener("click", () => { clear(); pen.down = false; $("#pad-answer").textContent = ""; $("#pad-probabilities").innerHTML = ""; });
    $("#pad-predict").addEventListener("click", predict);
    $("#pad-upload").addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (!file) return;
      $("#pad-error").hidden = true;
      const image = new Image();
      image.onload = () => {
        URL.revokeObjectURL(image.src);
        // the picture at its own size, in grey, on a backdrop for its transparent parts: they are paper, so
        // black behind light ink and white behind dark ink (the ink's brightness weighed by its opacity)
        const own = document.createElement("canvas");
        own.width = image.naturalWidth; own.height = image.naturalHeight;
        const ownContext = own.getContext("2d");
        ownContext.drawImage(image, 0, 0);
        const raw = ownContext.getImageData(0, 0, own.width, own.height).data;
        let [inkWeight, inkBrightness, transparent] = [0, 0, false];
        for (let i = 0; i < raw.length; i += 4) {
          const alpha = raw[i + 3] / 255;
          transparent = transparent || alpha < 1;
          inkWeight += alpha;
          inkBrightness += alpha * (0.299 * raw[i] + 0.587 * raw[i + 1] + 0.114 * raw[i + 2]);
        }
        const lightInk = transparent && inkWeight > 0 && inkBrightness / inkWeight > 127;
        ownContext.globalCompositeOperation = "destination-over"; // the backdrop goes behind the picture
        ownContext.fillStyle = lightInk ? "#000" : "#fff";
        ownContext.fillRect(0, 0, own.width, own.height);
        ownContext.globalCompositeOperation = "source-over";
        const data = ownContext.getImageData(0, 0, own.width, own.height);
        let sum = 0;
        for (let i = 0; i < data.data.length; i += 4) {
          const grey = Math.round(0.299 * data.data[i] + 0.587 * data.data[i + 1] + 0.114 * data.data[i + 2]);
          data.data[i] = data.data[i + 1] = data.data[i + 2] = grey;
          sum += grey;
        }
        // digits are light on dark, as in MNIST: invert a dark-on-light picture
        if (sum / (data.data.length / 4) > 127) {
          for (let i = 0; i < data.data.length; i += 4) for (let c = 0; c < 3; c++) data.data[i + c] = 255 - data.data[i + c];
        }
        ownContext.putImageData(data, 0, 0);
        // onto the pad with its proportions kept (the pad's black around it)
        clear();
        const scale = Math.min(canvas.width / own.width, canvas.height / own.height);
        const [width, height] = [own.width * scale, own.height * scale];
        context.drawImage(own, (canvas.width - width) / 2, (canvas.height - height) / 2, width, height);
        predict();
      };
      image.onerror = () => {
        URL.revokeObjectURL(image.src);
        $("#pad-error").textContent = `${file.name} is not an image this browser can read: upload a PNG or JPEG of a digit`;
        $("#pad-error").hidden = false;
        $("#pad-answer").textContent = ""; $("#pad-probabilities").innerHTML = "";
        clear(); // the digit before it is not what Predict should send now
        const seen = $("#pad-seen");
        seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
      };
      image.src = URL.createObjectURL(file);
      event.target.value = ""; // the same file again is a change too
    });
  }

  function inkBox() {
    // [left, top, right, bottom] of the pad's ink; null when nothing is drawn
    const canvas = $("#pad-canvas");
    const source = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    let [left, top, right, bottom] = [canvas.width, canvas.height, -1, -1];
    for (let y = 0; y < canvas.height; y++) for (let x = 0; x < canvas.width; x++) {
      if (source.data[(y * canvas.width + x) * 4] > 30) { left = Math.min(left, x); right = Math.max(right, x); top = Math.min(top, y); bottom = Math.max(bottom, y); }
    }
    return right < 0 ? null : [left, top, right, bottom];
  }

  function padPixels() {
    // the drawing, cropped to its ink and centred in a square (as MNIST's digits are), at the model's size;
    // null when there is no ink to see
    const canvas = $("#pad-canvas");
    const box = inkBox();
    if (box === null) return null;
    const [left, top, right, bottom] = box;
    const { rows, cols } = padModel;
    const small = document.createElement("canvas");
    small.width = cols; small.height = rows;
    const context = small.getContext("2d");
    context.fillStyle = "#000"; context.fillRect(0, 0, cols, rows);
    const side = Math.max(right - left, bottom - top) * 1.4 + 1;
    const cx = (left + right) / 2, cy = (top + bottom) / 2;
    context.imageSmoothingEnabled = true; context.imageSmoothingQuality = "high";
    context.drawImage(canvas, cx - side / 2, cy - side / 2, side, side, 0, 0, cols, rows);
    const data = context.getImageData(0, 0, cols, rows).data;
    let pixels = [];
    for (let i = 0; i < data.length; i += 4) pixels.push(data[i]);
    // strokes thin out when shrunk: stretch the darkest-to-brightest range to 0-255, as MNIST's digits are
    const brightest = Math.max(...pixels);
    if (brightest > 0) pixels = pixels.map((p) => Math.round(p * 255 / brightest));
    const shown = context.createImageData(cols, rows);
    pixels.forEach((p, i) => { shown.data.set([p, p, p, 255], i * 4); });
    context.putImageData(shown, 0, 0);
    const seen = $("#pad-seen").getContext("2d");
    seen.imageSmoothingEnabled = false;
    seen.drawImage(small, 0, 0, 112, 112);
    return pixels;
  }

  async function predict() {
    $("#pad-error").hidden = true;
    // no answer stays on screen under another model, or under one that failed to answer
    $("#pad-answer").textContent = ""; $("#pad-probabilities").innerHTML = "";
    try {
      const state = readState();
      if (!padModel || padModel.experiment !== state.experiment) {
        padModel = null;
        $("#pad-model").textContent = "";
        padModel = await api(`/api/model${state.experiment ? "?experiment=" + encodeURIComponent(state.experiment) : ""}`);
        padModel.experiment = state.experiment;
        $("#pad-model").textContent = `${padModel.model}, ${padModel.rows}x${padModel.cols} pixels`;
      }
      const pixels = padPixels();
      if (pixels === null) { // an empty pad: a model answers anything with confidence, so nothing is asked
        throw new Error("draw a digit first (or upload an image of one)");
      }
      const answer = await api("/api/predict", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ pixels: [pixels], experiment: state.experiment || null }),
      });
      const prediction = answer.predictions[0];
      $("#pad-answer").textContent = prediction.label;
      const probabilities = Object.entries(prediction).filter(([k]) => k.startsWith("probability_") || k.startsWith("score_"));
      $("#pad-probabilities").innerHTML = probabilities.map(([key, value]) => {
        const label = key.replace(/^(probability|score)_/, "");
        const top = String(label) === String(prediction.label);
        return `<div class="bar ${top ? "top" : ""}" data-class="${escapeHtml(label)}"><span>${escapeHtml(label)}</span><div style="width:${Math.max(1, value * 240)}px"></div><em>${(value * 100).toFixed(1)}%</em></div>`;
      }).join("");
    } catch (error) {
      $("#pad-error").textContent = error.message;
      $("#pad-error").hidden = false;
    }
  }

  // --- run an experiment ---------------------------------------------------------------------------------
  let polling = null;
  const QUEUE_RUNNING = "the queue is running: each experiment shows in the table when it ends";
  async function showRun() {
    if (SNAPSHOT) throw new Error("a static export cannot run experiments: open the live board (mnist-lab board)");
    if (!$("#run-params").dataset.loaded) {
      const { params } = await api("/api/params");
      $("#run-params").innerHTML = Object.entries(params).map(([k, v]) =>
        `<tr><th class="mono">${escapeHtml(k)}</th><td>${escapeHtml(formatValue(v))}</td></tr>`).join("");
      $("#run-params").dataset.loaded = "1";
    }
    await refreshQueue();
  }

  let followed = null; // the queued experiment whose output is shown: the running one, or the one clicked
  let queueWasBusy = false;
  async function refreshQueue() {
    const { tasks } = await api("/api/queue");
    $("#run-tasks").innerHTML = tasks.length
      ? "<tr><th>name</th><th>created</th><th>status</th></tr>" + tasks.map((t) =>
        `<tr data-name="${escapeHtml(t.name)}" class="${t.name === followed ? "selected" : ""}"><td><button type="button" class="link mono" title="show its output below">${escapeHtml(t.name)}</button></td><td>${escapeHtml(t.created)}</td><td>${escapeHtml(t.status)}</td></tr>`).join("")
      : "<tr><td class='summary'>nothing queued</td></tr>";
    const running = tasks.find((t) => t.status === "Running");
    if (running) followed = running.name;
    const task = tasks.find((t) => t.name === followed);
    try {
      await showOutput(task || null);
    } catch (error) { // the output is not there yet (or DVC is busy): the queue's status keeps refreshing
      $("#run-progress").textContent = `${task.name}: ${error.message}`;
    }
    const busy = tasks.some((t) => t.status === "Queued" || t.status === "Running");
    const finished = queueWasBusy && !busy;
    queueWasBusy = busy;
    if (!busy && $("#run-message").textContent === QUEUE_RUNNING) $("#run-message").textContent = "the queue has finished: its experiments are rows of the table";
    if (finished && readState().view === "run") { table = null; await show(); } // the header counts the new rows
    clearTimeout(polling);
    if (busy && readState().view === "run") polling = setTimeout(() => { table = null; refreshQueue(); }, 2000);
  }

  async function showOutput(task) {
    $("#run-follow").hidden = !task;
    if (!task) return;
    const output = await api(`/api/queue/${encodeURIComponent(task.name)}/output`);
    const epoch = output.epoch;
    const where = !output.started ? "waiting in the queue"
      : task.status === "Running" ? `running ${output.stage || "(starting)"}` : `${task.status.toLowerCase()} (last stage: ${output.stage || "none"})`;
    $("#run-progress").textContent = `${task.name}: ${where}` + (epoch && task.status === "Running" ? `, ${epoch.model} epoch ${epoch.epoch} of ${epoch.epochs}` : "");
    $("#run-epochs").hidden = !(epoch && task.status === "Running");
    if (epoch) { $("#run-epochs").max = epoch.epochs; $("#run-epochs").value = epoch.epoch; }
    const box = $("#run-output");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = output.lines.join("\n");
    if (atEnd) box.scrollTop = box.scrollHeight;
  }

  $("#run-tasks").addEventListener("click", async (event) => {
    const row = event.target.closest("tr[data-name]");
    if (!row) return;
    followed = row.dataset.name;
    await refreshQueue();
  });

  $("#run-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#run-error").hidden = true;
    const set = {};
    for (const line of $("#run-set").value.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const at = line.indexOf("=");
      if (at < 0 && line.startsWith("~") && line.length > 1) { set[line] = ""; continue; }  // remove a key
      if (at < 1) { $("#run-error").textContent = `'${line}' is not key=value (for example models.mlp.alpha=0.001)`; $("#run-error").hidden = false; return; }
      set[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    try {
      const answer = await api("/api/queue", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ set, name: $("#run-name").value.trim() || null }),
      });
      $("#run-message").textContent = `queued ${answer.queued}: start the queue to run it`;
      $("#run-set").value = ""; $("#run-name").value = ""; // queued: Queue again would queue it twice
      await refreshQueue();
    } catch (error) {
      $("#run-error").textContent = error.message;
      $("#run-error").hidden = false;
    }
  });
  $("#pad-source").addEventListener("change", (event) => {
    padModel = null;
    $("#pad-answer").textContent = "";
    $("#pad-probabilities").innerHTML = "";
    update({ experiment: event.target.value });
    if (inkBox() !== null) predict(); // the digit on the pad, asked of the model now chosen
  });
  $("#run-start").addEventListener("click", async () => {
    $("#run-error").hidden = true;
    try {
      await api("/api/queue/start", { method: "POST" });
      $("#run-message").textContent = QUEUE_RUNNING;
      await refreshQueue();
    } catch (error) {
      $("#run-error").textContent = error.message;
      $("#run-error").hidden = false;
    }
  });

  // --- wiring ---------------------------------------------------------------------------------------------
  async function show() {
    const state = readState();
    for (const view of ["table", "compare", "run", "pad"]) $(`#view-${view}`).hidden = view !== state.view;
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === state.view);
    try {
      if (!table) {
        status("loading experiments ...");
        table = await api("/api/experiments?hidden=1&code_only=1");
        status(`${table.total} experiments`);
        table.runsPending = true; // a sort column may be a run's alone: not said missing until they are in
        loadRuns(table);
        loadChampion(table);
      }
      if (state.view === "table") renderTable(state);
      if (state.view === "compare") {
        const ids = state.selected;
        $("#compare-empty").textContent = COMPARE_EMPTY;
        $("#compare-empty").classList.remove("error");
        $("#compare-empty").hidden = ids.length >= 2;
        $("#compare-body").hidden = ids.length < 2;
        if (ids.length >= 2) {
          const path = `/api/compare?ids=${ids.map(encodeURIComponent).join(",")}${state.baseline ? "&baseline=" + encodeURIComponent(state.baseline) : ""}`;
          if (!comparison || comparison.path !== path) {
            status("comparing ...");
            comparison = await api(path);
            comparison.path = path;
            status(`${comparison.experiments.length} experiments compared`);
          }
          renderCompare(state);
        }
      }
      if (state.view === "run") await showRun();
      if (state.view === "pad") {
        const source = $("#pad-source");
        if (state.experiment && ![...source.options].some((o) => o.value === state.experiment)) {
          source.add(new Option(`experiment ${shortId(state.experiment)}`, state.experiment));
        }
        source.value = state.experiment;
      }
      if (state.view === "pad" && (!padModel || padModel.experiment !== state.experiment)) {
        padModel = null;
        $("#pad-model").textContent = "";
        padModel = await api(`/api/model${state.experiment ? "?experiment=" + encodeURIComponent(state.experiment) : ""}`);
        padModel.experiment = state.experiment;
        $("#pad-model").textContent = `${padModel.model}, ${padModel.rows}x${padModel.cols} pixels`;
      }
    } catch (error) {
      status("");
      const target = { pad: "#pad-error", run: "#run-error" }[state.view] || "#query-error";
      if (state.view === "compare") {
        $("#compare-body").hidden = true;
        $("#compare-empty").hidden = false; $("#compare-empty").textContent = error.message; $("#compare-empty").classList.add("error");
      }
      else { $(target).textContent = error.message; $(target).hidden = false; }
    }
  }

  function championRows(rows, run) {
    // as board/views.py's champion_rows: of the rows holding its run (an unchanged model's run is held by
    // every later commit and experiment too), the commit that first recorded it (the oldest: rows come
    // newest first); without one, the DVC experiments or the run row holding it
    const holding = rows.filter((row) => row.id === `run:${run}` || Object.values(row.runs || {}).includes(run));
    const commits = holding.filter((row) => row.source === "commit");
    return commits.length ? commits.slice(-1) : holding;
  }

  async function loadChampion(forTable) {
    // the registry's champion is a model version: the rows that hold its run get the `champion` label
    // (without a registry the table labels the tagged commit itself); asked after the table is drawn
    try {
      const { run_id: run } = await api("/api/champion");
      if (table !== forTable || !run) return;
      for (const row of championRows(table.rows, run)) {
        if (!row.labels.includes("champion")) row.labels = row.labels.concat(["champion"]);
      }
      forTable.championRun = run; // for the runs' rows, if they arrive after
      if (readState().view === "table") renderTable(readState());
    } catch (error) { /* no store, or no registry: the table shows no registry champion */ }
  }

  async function loadRuns(forTable) {
    // the store's runs that no experiment names: asked after the table is drawn (the store may be slow or away)
    try {
      const { rows } = await api("/api/runs");
      if (table !== forTable || !rows.length) return;
      const run = forTable.championRun;
      if (run) rows.forEach((row) => { if (row.id === `run:${run}` && !row.labels.includes("champion")) row.labels = row.labels.concat(["champion"]); });
      table.rows = table.rows.concat(rows);
      const known = new Set(table.columns);
      for (const row of rows) for (const column of Object.keys(row)) if (!known.has(column)) { known.add(column); table.columns.push(column); }
      status(`${table.total} experiments, ${rows.length} runs no experiment names`);
      if (readState().view === "table") renderTable(readState());
      performance.mark("runs-merged");
    } catch (error) {
      if (table === forTable) status(`${table.total} experiments (runs: ${error.message})`);
    } finally {
      forTable.runsPending = false;
      const state = readState(); // a sort column not said missing while the runs were coming: now it is
      if (table === forTable && state.sort && state.view === "table") renderTable(state);
    }
  }

  function update(change, push = false) {
    const state = Object.assign(readState(), change);
    writeState(state, !push);
    show();
  }

  let typing = null;
  $("#query").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => update({ q: event.target.value }), 120);
  });
  $("#query-form").addEventListener("submit", (event) => { event.preventDefault(); update({ q: $("#query").value }); });
  $("#show-hidden").addEventListener("change", (event) => update({ hidden: event.target.checked }));
  $("#show-code-only").addEventListener("change", (event) => update({ codeOnly: event.target.checked }));
  $("#experiments thead").addEventListener("click", (event) => {
    const th = event.target.closest("th.sortable");
    if (!th) return;
    const state = readState();
    update({ sort: th.dataset.column, desc: state.sort === th.dataset.column ? !state.desc : false });
  });
  $("#experiments thead").addEventListener("input", (event) => {
    const column = event.target.dataset.filter;
    if (!column) return;
    clearTimeout(typing);
    typing = setTimeout(() => update({ filters: Object.assign(readState().filters, { [column]: event.target.value }) }), 120);
  });
  $("#experiments tbody").addEventListener("change", (event) => {
    if (!event.target.classList.contains("select")) return;
    const id = event.target.closest("tr").dataset.id;
    const selected = readState().selected.filter((x) => x !== id);
    if (event.target.checked) selected.push(id);
    update({ selected });
  });
  $("#compare-selected").addEventListener("click", () => update({ view: "compare", selected: actionable(readState()) }, true));
  $("#pad-selected").addEventListener("click", () => update({ view: "pad", experiment: actionable(readState())[0] }, true));
  function acting() {  // an action starts: what an earlier one said goes
    $("#action-message").hidden = true;
    $("#action-error").hidden = true;
  }
  function actionFailed(error) {
    $("#action-error").textContent = error.message;
    $("#action-error").hidden = false;
  }
  async function label(remove) {
    const state = readState();
    const name = $("#label-name").value.trim();
    acting();
    try {
      const acting = actionable(state);
      for (const experiment of acting) {
        await api("/api/labels", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ experiment, label: name, remove }),
        });
      }
      $("#action-message").textContent = `${remove ? "removed" : "added"} label '${name}' ${remove ? "from" : "to"} ` +
        `${acting.length} experiment${acting.length === 1 ? "" : "s"} in labels.yaml: commit it to share the labels`;
      $("#action-message").hidden = false;
      table = null; // labels.yaml changed: read the table again
      show();
    } catch (error) {
      actionFailed(error);
    }
  }
  async function action(path, body, describe, after = {}) {
    acting();
    try {
      const answer = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      $("#action-message").textContent = describe(answer);
      $("#action-message").hidden = false;
      table = null; // the repository changed: read the table again
      update(after);
    } catch (error) {
      actionFailed(error);
    }
  }
  $("#commit-selected").addEventListener("click", () => {
    const experiment = actionable(readState())[0];
    const message = window.prompt(`Commit message for ${experiment}:`, `Experiment: ${experiment.slice(4)}`);
    // the reasons as the CLI gives them: `mnist-lab link` helps only when the server did not answer
    const why = (a) => Object.entries(a.untagged_because || {}).map(([model, reason]) =>
      ` (run of ${model} not tagged: ${reason}${reason === "the tracking server did not answer" ? "; mnist-lab link tags it later" : ""})`).join("");
    if (message) {
      action("/api/commit", { experiment, message }, (a) => `committed ${experiment} as ${a.commit.slice(0, 12)}${why(a)}`,
        { selected: [] }); // the applied experiment is a commit now: its row is gone
    }
  });
  $("#promote").addEventListener("click", () => {
    // the champion is what `mnist-lab serve` answers with: moved only when asked twice
    if (window.confirm("Promote the challenger to champion? (only if it beats the champion on the same test set, as `mnist-lab promote`)")) {
      action("/api/promote", {}, (a) => `${a.model}: ${a.decision}`);
    }
  });
  $("#label-add").addEventListener("click", () => label(false));
  $("#label-remove").addEventListener("click", () => label(true));
  $("#compare-experiments").addEventListener("change", (event) => {
    if (event.target.name === "baseline") update({ baseline: event.target.value });
  });
  $("#only-changed").addEventListener("change", (event) => update({ changed: event.target.checked }));
  $("#curve-model").addEventListener("change", (event) => update({ model: event.target.value }));
  $("#smoothing").addEventListener("input", (event) => update({ smooth: Number(event.target.value) }));
  $("#log-scale").addEventListener("change", (event) => update({ log: event.target.checked }));
  document.querySelector("nav").addEventListener("click", (event) => {
    // a tab changes the view only: the query, filters and selection stay (a plain link would drop them)
    const link = event.target.closest("a[data-view]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    const state = readState();
    // from the table, the Compare tab compares what its button would: the selected rows it shows
    const selected = link.dataset.view === "compare" && state.view === "table" ? actionable(state) : state.selected;
    update({ view: link.dataset.view, selected }, true);
  });
  window.addEventListener("hashchange", show);
  setupPad();
  show();
  window.MnistBoard = { championRows };  // what the tests hold equal to board/views.py's twin
})();
