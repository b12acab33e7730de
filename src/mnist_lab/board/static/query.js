// The experiments page's query language, as src/mnist_lab/core/query.py defines it (read its docstring).
// Both are tested against the same cases: tests/core/query_cases.json. A classic script (no ES module),
// so that the static export works from file://; under Node.js it is a CommonJS module.
(function (root) {
  "use strict";

  const OPERATORS = ["==", "!=", "<=", ">=", "!~", "=", "<", ">", "~"];
  const OPERATORS_SHOWN = "= < > ~ == != <= >= !~";
  const KEYWORDS = ["and", "or", "not"];
  // ASCII whitespace only, as query.py: JavaScript's \s and trim() take Unicode spaces, Python's \x1c-\x1f
  const TOKEN = /[ \t\n\r\f\v]*(?:([()])|(==|!=|<=|>=|!~|=|<|>|~)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([^ \t\n\r\f\v()=!<>~"']+))/y;
  const strip = (text) => text.replace(/^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g, "");

  class QueryError extends Error {}

  // what Python's str.isprintable() refuses (but the space): repr escapes it
  const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

  function repr(text) {
    // Python's repr of a string, so both implementations word their errors alike (a control character or
    // a backslash in a query is written as Python writes it)
    const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
    let out = "";
    for (const ch of text) {
      const code = ch.codePointAt(0);
      const hex = (width) => code.toString(16).padStart(width, "0");
      if (ch === "\\" || ch === quote) out += "\\" + ch;
      else if (ch === "\t") out += "\\t";
      else if (ch === "\n") out += "\\n";
      else if (ch === "\r") out += "\\r";
      else if (ch !== " " && NOT_PRINTABLE.test(ch)) {
        out += code < 0x100 ? `\\x${hex(2)}` : code < 0x10000 ? `\\u${hex(4)}` : `\\U${hex(8)}`;
      } else out += ch;
    }
    return quote + out + quote;
  }

  // Positions count characters as Python does (code points): a string's length and indices count UTF-16
  // units, two for an emoji
  const characters = (text) => Array.from(text).length;

  function tokenize(query) {
    const tokens = [];
    let position = 0;  // in UTF-16 units
    let characterPosition = 0;  // the same place in characters
    while (position < query.length) {
      if (strip(query.slice(position)) === "") break;
      TOKEN.lastIndex = position;
      const match = TOKEN.exec(query);
      if (!match || TOKEN.lastIndex === position) {
        const rest = query.slice(position);
        const spaces = rest.length - rest.replace(/^[ \t\n\r\f\v]+/, "").length;
        const shown = Array.from(rest.slice(spaces)).slice(0, 12).join("");
        throw new QueryError(`query: cannot read ${repr(shown)} at character ${characterPosition + spaces + 1}`);
      }
      const kinds = ["paren", "op", "string", "word"];
      const group = [1, 2, 3, 4].find((i) => match[i] !== undefined);
      const text = match[group];
      const read = characters(match[0]);
      tokens.push({ kind: kinds[group - 1], text, position: characterPosition + read - characters(text) });
      position = TOKEN.lastIndex;
      characterPosition += read;
    }
    tokens.push({ kind: "end", text: "", position: characters(query) });
    return tokens;
  }

  function asNumber(value) {
    if (value === null || value === undefined || typeof value === "boolean") return null;
    if (typeof value === "number") return value;
    const text = strip(String(value));
    if (text === "" || !/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^[+-]?(inf|infinity|nan)$/i.test(text)) return null;
    return Number(text.replace(/^([+-]?)inf(inity)?$/i, "$1Infinity"));
  }

  function asText(value) {
    if (typeof value === "boolean") return value ? "true" : "false";
    if (value === null || value === undefined) return "null";
    if (typeof value === "number") return Number.isInteger(value) ? `${value}` : `${value}`;
    return String(value);
  }

  function literal(token) {
    if (token.kind === "string") return token.text.slice(1, -1).replace(/\\(.)/g, "$1");
    const lowered = token.text.toLowerCase();
    if (lowered === "true" || lowered === "false") return lowered === "true";
    if (lowered === "null") return null;
    const number = asNumber(token.text);
    return number === null ? token.text : number;
  }

  function compare(left, operator, right) {
    // a list holds when one of its items does; `!=` and `!~` when none of them matches (as Python's twin)
    if (Array.isArray(left)) {
      if (operator === "!=" || operator === "!~") {
        const positive = operator === "!=" ? "=" : "~";
        return !left.some((item) => compare(item, positive, right));
      }
      return left.some((item) => compare(item, operator, right));
    }
    if ((left === null || left === undefined) && right !== null) return false;
    if (operator === "~" || operator === "!~") {
      const contains = asText(left).toLowerCase().includes(asText(right).toLowerCase());
      return operator === "~" ? contains : !contains;
    }
    let a = asNumber(left);
    let b = asNumber(right);
    if ((a === null) !== (b === null) && !["=", "==", "!="].includes(operator)) return false;
    if (a === null || b === null) {
      a = asText(left);
      b = asText(right);
    }
    switch (operator) {
      case "=":
      case "==":
        return a === b;
      case "!=":
        return a !== b;
      case "<":
        return a < b;
      case "<=":
        return a <= b;
      case ">":
        return a > b;
      default:
        return a >= b;
    }
  }

  function resolveField(name, columns) {
    if (columns.includes(name)) return name;
    const matches = columns.filter((c) => c.endsWith(`.${name}`)).sort();
    if (matches.length === 1) return matches[0];
    if (matches.length) {
      const shown = matches.slice(0, 6).join(", ") + (matches.length > 6 ? ", ..." : "");
      throw new QueryError(`query: ${repr(name)} is ambiguous: say which one (${shown})`);
    }
    const lower = name.toLowerCase();
    const near = columns.filter((c) => c.split(".").pop().toLowerCase().includes(lower));
    if (near.length) {
      const shown = near.slice(0, 6).join(", ") + (near.length > 6 ? ", ..." : "");
      throw new QueryError(`query: no column ${repr(name)}; did you mean ${shown}?`);
    }
    const shown = columns.slice(0, 12).join(", ") + (columns.length > 12 ? ", ..." : "");
    throw new QueryError(`query: no column ${repr(name)} (columns: ${shown})`);
  }

  const MAX_NESTING = 50; // as core/query.py

  function isNumber(value) {
    return typeof value === "number";
  }

  function numericColumns(rows) {
    // as numeric_columns: the columns whose values (missing ones left out) are all numbers or lists of them
    const numeric = new Map();
    for (const row of rows) {
      for (const [column, value] of Object.entries(row)) {
        if (value === null || value === undefined || numeric.get(column) === false) continue;
        const items = Array.isArray(value) ? value : [value];
        numeric.set(column, items.length > 0 && items.every(isNumber));
      }
    }
    return [...numeric].filter(([, isNumeric]) => isNumeric).map(([column]) => column);
  }

  function parseQuery(query, columns, numeric = []) {
    const numericSet = new Set(numeric);
    const tokens = tokenize(query);
    let index = 0, depth = 0;
    const token = () => tokens[index];
    const keyword = (word) => {
      if (token().kind === "word" && token().text.toLowerCase() === word) {
        index += 1;
        return true;
      }
      return false;
    };
    const fail = (expected) => {
      const found = token().kind !== "end" ? repr(token().text) : "the end";
      return new QueryError(`query: expected ${expected} at character ${token().position + 1}, found ${found}`);
    };
    const orExpr = () => {
      const parts = [andExpr()];
      while (keyword("or")) parts.push(andExpr());
      return parts.length === 1 ? parts[0] : (row) => parts.some((p) => p(row));
    };
    const andExpr = () => {
      const parts = [notExpr()];
      while (keyword("and")) parts.push(notExpr());
      return parts.length === 1 ? parts[0] : (row) => parts.every((p) => p(row));
    };
    const deeper = (position) => {
      depth += 1;
      if (depth > MAX_NESTING) {
        throw new QueryError(`query: nested too deeply at character ${position + 1} (at most ${MAX_NESTING} ` +
          "`not`s and parentheses inside one another)");
      }
    };
    const notExpr = () => {
      const position = token().position;
      if (keyword("not")) {
        deeper(position);
        const inner = notExpr();
        depth -= 1;
        return (row) => !inner(row);
      }
      return atom();
    };
    const atom = () => {
      if (token().kind === "paren" && token().text === "(") {
        deeper(token().position);
        index += 1;
        const inner = orExpr();
        if (!(token().kind === "paren" && token().text === ")")) throw fail("`)`");
        index += 1;
        depth -= 1;
        return inner;
      }
      if (!["word", "string"].includes(token().kind) || KEYWORDS.includes(token().text.toLowerCase())) {
        throw fail("a field name");
      }
      const name = token().kind === "word" ? token().text : literal(token());
      const field = resolveField(name, columns);
      index += 1;
      if (token().kind !== "op") throw fail(`an operator (${OPERATORS_SHOWN}) after ${repr(name)}`);
      const operator = token().text;
      index += 1;
      const isKeyword = token().kind === "word" && KEYWORDS.includes(token().text.toLowerCase());
      if (!["word", "string"].includes(token().kind) || isKeyword) throw fail(`a value after ${repr(operator)}`);
      const value =
        (operator === "~" || operator === "!~") && token().kind === "word" ? token().text : literal(token());
      if (numericSet.has(field) && operator !== "~" && operator !== "!~" && typeof value === "string"
          && asNumber(value) === null) {
        throw new QueryError(`query: ${repr(name)} holds numbers, and ${repr(value)} at character ` +
          `${token().position + 1} is not one: compare it with a number (or match its text with ~)`);
      }
      index += 1;
      return (row) => compare(row[field] === undefined ? null : row[field], operator, value);
    };
    if (token().kind === "end") return () => true;
    const predicate = orExpr();
    if (token().kind !== "end") throw fail("`and`, `or` or the end");
    return predicate;
  }

  // a column's order, as query.py's sort_key: numbers first, by value, then the rest by its text
  function sortText(value) {
    return Array.isArray(value) ? `[${value.map(sortText).join(", ")}]` : asText(value);
  }

  function byCodePoint(a, b) {
    // as Python compares strings (JavaScript's < compares UTF-16 units: an emoji before U+FF5E)
    for (let i = 0, j = 0; i < a.length && j < b.length;) {
      const x = a.codePointAt(i), y = b.codePointAt(j);
      if (x !== y) return x < y ? -1 : 1;
      i += x > 0xffff ? 2 : 1;
      j += y > 0xffff ? 2 : 1;
    }
    return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
  }

  function sortOrder(x, y) {
    const xNumber = typeof x === "number", yNumber = typeof y === "number";
    if (xNumber !== yNumber) return xNumber ? -1 : 1;
    if (xNumber) return x < y ? -1 : x > y ? 1 : 0;
    return byCodePoint(sortText(x), sortText(y));
  }

  const api = { parseQuery, numericColumns, QueryError, OPERATORS, compare, sortOrder };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.MnistQuery = api;
})(typeof window !== "undefined" ? window : this);
