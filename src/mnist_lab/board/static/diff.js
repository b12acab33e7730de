// Code diffs in the browser, in the unified format `git diff` writes (3 lines of context), for the static
// export: it holds each experiment's code files (board/export.py, code_snapshot) and diffs any two of them
// without git. Lines are matched with Myers' O(ND) algorithm (git's default), so hunks are git's in most
// cases; where two equally short edits exist, git may place a hunk elsewhere (its indent heuristic) and
// adds a function name after `@@`; either way the patch applies (`git apply`) and gives the same files.
// Renames are found as `git diff` finds them in most cases (its default -M50%: identical files first, then
// files whose content is at least half the same, scored as git 2.39's diffcore-delta does; newer git also
// counts a last line without its newline, and pairs files of the same name first).
// A classic script (no ES module), so that the export works from file://; under Node.js a CommonJS module.
(function (root) {
  "use strict";

  const CONTEXT = 3;
  const MAX_EDITS = 4000; // past this many inserted + deleted lines, a file's diff replaces it whole
  const NO_NEWLINE = "\\ No newline at end of file";

  function splitLines(text) {
    // the lines (without their "\n") and whether the last one lacks its newline
    if (text === "") return { lines: [], missingNewline: false };
    const missingNewline = !text.endsWith("\n");
    return { lines: (missingNewline ? text : text.slice(0, -1)).split("\n"), missingNewline };
  }

  // The shortest edit script from a to b (arrays of strings): a list of [op, line] with op " ", "-" or
  // "+", in order. Null when it needs more than `limit` insertions and deletions.
  function editScript(a, b, limit) {
    const n = a.length, m = b.length, max = Math.min(n + m, limit), offset = max + 1;
    const v = new Int32Array(2 * max + 3);
    const trace = [];
    let found = false;
    for (let d = 0; d <= max && !found; d++) {
      trace.push(v.slice(offset - d - 1, offset + d + 2)); // v[-d-1 .. d+1] before this round
      for (let k = -d; k <= d; k += 2) {
        let x = k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1]) ? v[offset + k + 1] : v[offset + k - 1] + 1;
        let y = x - k;
        while (x < n && y < m && a[x] === b[y]) { x++; y++; }
        v[offset + k] = x;
        if (x >= n && y >= m) { found = true; break; }
      }
    }
    if (!found) return null;
    const script = [];
    let x = n, y = m;
    for (let d = trace.length - 1; d >= 0; d--) {
      const before = trace[d], at = (k) => before[k + d + 1], k = x - y;
      const previousK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
      const previousX = d === 0 ? 0 : at(previousK), previousY = previousX - previousK;
      while (x > previousX && y > previousY) { script.push([" ", a[x - 1]]); x--; y--; }
      if (d > 0) {
        if (x === previousX) script.push(["+", b[y - 1]]);
        else script.push(["-", a[x - 1]]);
      }
      x = previousX; y = previousY;
    }
    return script.reverse();
  }

  function range(start, count) {
    // git's hunk range: "start,count", the count left out when 1, the start the line before when 0
    if (count === 0) return `${start - 1},0`;
    return count === 1 ? `${start}` : `${start},${count}`;
  }

  // The hunks of a unified diff of two texts ("" when they are equal), each line ending with "\n".
  function unifiedHunks(oldText, newText) {
    const before = splitLines(oldText), after = splitLines(newText);
    // the last line without its newline differs from the same line with one, as in git
    const key = (lines, missing) => lines.map((line, i) => (missing && i === lines.length - 1 ? line + "\0" : line));
    const a = key(before.lines, before.missingNewline), b = key(after.lines, after.missingNewline);
    let start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) start++;
    let endA = a.length, endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
    let middle = editScript(a.slice(start, endA), b.slice(start, endB), MAX_EDITS);
    if (middle === null) {
      middle = [...a.slice(start, endA).map((line) => ["-", line]), ...b.slice(start, endB).map((line) => ["+", line])];
    }
    const script = [
      ...a.slice(0, start).map((line) => [" ", line]), ...middle, ...a.slice(endA).map((line) => [" ", line]),
    ];
    // each entry's line numbers (1-based) in the old and the new text
    const lines = [];
    let oldNumber = 1, newNumber = 1;
    for (const [op, line] of script) {
      lines.push({ op, line, oldNumber, newNumber });
      if (op !== "+") oldNumber++;
      if (op !== "-") newNumber++;
    }
    const changed = lines.map((entry, i) => (entry.op !== " " ? i : -1)).filter((i) => i >= 0);
    if (!changed.length) return "";
    // changes closer than twice the context share a hunk
    const groups = [];
    for (const i of changed) {
      const last = groups[groups.length - 1];
      if (last && i - last[1] <= 2 * CONTEXT + 1) last[1] = i;
      else groups.push([i, i]);
    }
    let out = "";
    for (const [first, last] of groups) {
      const from = Math.max(0, first - CONTEXT), to = Math.min(lines.length - 1, last + CONTEXT);
      const hunk = lines.slice(from, to + 1);
      const oldCount = hunk.filter((entry) => entry.op !== "+").length;
      const newCount = hunk.filter((entry) => entry.op !== "-").length;
      const oldStart = hunk.find((entry) => entry.op !== "+")?.oldNumber ?? lines[from].oldNumber;
      const newStart = hunk.find((entry) => entry.op !== "-")?.newNumber ?? lines[from].newNumber;
      out += `@@ -${range(oldCount ? oldStart : lines[from].oldNumber, oldCount)} ` +
        `+${range(newCount ? newStart : lines[from].newNumber, newCount)} @@\n`;
      for (const entry of hunk) {
        const last = entry.line.endsWith("\0");
        out += `${entry.op}${last ? entry.line.slice(0, -1) : entry.line}\n`;
        if (last) out += `${NO_NEWLINE}\n`;
      }
    }
    return out;
  }

  function short(oid) {
    return oid ? oid.slice(0, 7) : "0000000";
  }

  // Every code file of a commit in the snapshot: {path: [mode, object id]}; its folders are git's tree
  // objects (name: [mode, id], a folder's mode 40000), walked from `src`.
  function files(code, commit) {
    const state = code.commits[commit], found = {};
    const walk = (tree, prefix) => {
      for (const [name, [mode, id]] of Object.entries(code.trees[tree] || {})) {
        if (mode === "40000") walk(id, `${prefix}${name}/`);
        else found[`${prefix}${name}`] = [mode, id];
      }
    };
    if (state.src) walk(state.src, "src/");
    for (const path of Object.keys(state)) {
      if (path !== "src" && state[path]) found[path] = ["100644", state[path]];
    }
    return found;
  }

  const MAX_SCORE = 60000, MINIMUM_SCORE = 30000; // git's rename scores: 50% similar at least
  const RENAME_LIMIT = 1000; // git's diff.renameLimit: past this many sources x destinations, exact renames only

  // git's diffcore-delta: a file's bytes cut into lines (at most 64 bytes each, CR of CRLF left out, a last
  // line without its newline not counted), each hashed; {hash: bytes}
  function spans(bytes) {
    const counts = new Map();
    let accum1 = 0, accum2 = 0, n = 0;
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i];
      if (c === 13 && i + 1 < bytes.length && bytes[i + 1] === 10) continue;
      const old1 = accum1;
      accum1 = (((accum1 << 7) ^ (accum2 >>> 25)) + c) >>> 0;
      accum2 = ((accum2 << 7) ^ (old1 >>> 25)) >>> 0;
      if (++n < 64 && c !== 10) continue;
      const hash = ((accum1 + Math.imul(accum2, 0x61)) >>> 0) % 107927; // git's HASHBASE
      counts.set(hash, (counts.get(hash) || 0) + n);
      n = 0; accum1 = 0; accum2 = 0;
    }
    return counts;
  }

  // git's estimate_similarity: the bytes of `source` that `destination` keeps, over the larger size
  function similarity(source, destination) {
    const largest = Math.max(source.bytes.length, destination.bytes.length);
    const delta = largest - Math.min(source.bytes.length, destination.bytes.length);
    if (!destination.bytes.length || largest * (MAX_SCORE - MINIMUM_SCORE) < delta * MAX_SCORE) return 0;
    let copied = 0;
    for (const [hash, count] of source.spans) copied += Math.min(count, destination.spans.get(hash) || 0);
    return Math.floor((copied * MAX_SCORE) / largest);
  }

  const baseName = (path) => path.slice(path.lastIndexOf("/") + 1);

  // The renames between two commits' files ({path: [mode, id]}) as git finds them: {new path: [old path,
  // score]}, a score of MAX_SCORE for an identical file
  function findRenames(code, before, after) {
    const regular = (mode) => mode === "100644" || mode === "100755";
    const gone = Object.keys(before).filter((path) => !(path in after) && regular(before[path][0])).sort();
    const come = Object.keys(after).filter((path) => !(path in before) && regular(after[path][0])).sort();
    const renames = {}, used = new Set();
    for (const path of come) { // identical content: a source of the same name first
      const same = gone.filter((old) => !used.has(old) && before[old][1] === after[path][1]);
      const source = same.find((old) => baseName(old) === baseName(path)) ?? same[0];
      if (source !== undefined) { renames[path] = [source, MAX_SCORE]; used.add(source); }
    }
    const sources = gone.filter((old) => !used.has(old) && code.blobs[before[old][1]] != null);
    const targets = come.filter((path) => !(path in renames) && code.blobs[after[path][1]] != null);
    if (!sources.length || !targets.length || sources.length * targets.length > RENAME_LIMIT * RENAME_LIMIT) {
      return renames;
    }
    const encoder = new TextEncoder();
    const measured = (path, id) => {
      const bytes = encoder.encode(code.blobs[id]);
      return { path, bytes, spans: spans(bytes) };
    };
    const olds = sources.map((path) => measured(path, before[path][1]));
    const candidates = [];
    for (const path of targets) {
      const target = measured(path, after[path][1]);
      for (const source of olds) {
        const score = similarity(source, target);
        if (score >= MINIMUM_SCORE) {
          candidates.push({ source: source.path, target: path, score, sameName: baseName(source.path) === baseName(path) });
        }
      }
    }
    candidates.sort((a, b) => b.score - a.score || b.sameName - a.sameName);
    for (const { source, target, score } of candidates) {
      if (target in renames || used.has(source)) continue;
      renames[target] = [source, score];
      used.add(source);
    }
    return renames;
  }

  // `git diff <old> <new> -- src params.yaml dvc.yaml` of two commits of the snapshot; null when the
  // snapshot does not hold one of them.
  function codeDiff(code, oldCommit, newCommit) {
    if (!code || !code.commits[oldCommit] || !code.commits[newCommit]) return null;
    const before = files(code, oldCommit), after = files(code, newCommit);
    const renames = findRenames(code, before, after);
    const renamed = new Set(Object.values(renames).map(([source]) => source));
    const paths = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    let out = "";
    for (const path of paths) {
      if (renamed.has(path) && !(path in after)) continue; // shown under its new name
      const [oldPath, score] = renames[path] || [path, null];
      const [oldMode, oldId] = before[oldPath] || [null, null];
      const [newMode, newId] = after[path] || [null, null];
      if (oldId === newId && oldMode === newMode && score === null) continue;
      out += `diff --git a/${oldPath} b/${path}\n`;
      if (score !== null) {
        if (oldMode !== newMode) out += `old mode ${oldMode}\nnew mode ${newMode}\n`;
        out += `similarity index ${Math.floor((score * 100) / MAX_SCORE)}%\nrename from ${oldPath}\nrename to ${path}\n`;
        if (oldId !== newId) out += `index ${short(oldId)}..${short(newId)}${oldMode === newMode ? ` ${newMode}` : ""}\n`;
      } else if (!oldId) out += `new file mode ${newMode}\nindex ${short(null)}..${short(newId)}\n`;
      else if (!newId) out += `deleted file mode ${oldMode}\nindex ${short(oldId)}..${short(null)}\n`;
      else if (oldMode !== newMode) {
        out += `old mode ${oldMode}\nnew mode ${newMode}\n`;
        if (oldId !== newId) out += `index ${short(oldId)}..${short(newId)}\n`;
      } else out += `index ${short(oldId)}..${short(newId)} ${newMode}\n`;
      if (oldId === newId) continue;
      const oldText = oldId ? code.blobs[oldId] : "", newText = newId ? code.blobs[newId] : "";
      if (oldText === null || newText === null) {
        out += `Binary files ${oldId ? `a/${oldPath}` : "/dev/null"} and ${newId ? `b/${path}` : "/dev/null"} differ\n`;
        continue;
      }
      const hunks = unifiedHunks(oldText, newText);
      if (hunks) out += `--- ${oldId ? `a/${oldPath}` : "/dev/null"}\n+++ ${newId ? `b/${path}` : "/dev/null"}\n${hunks}`;
    }
    return out;
  }

  const api = { codeDiff, unifiedHunks, editScript, findRenames };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.MnistDiff = api;
})(typeof window !== "undefined" ? window : this);
