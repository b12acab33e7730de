"""The experiments page's query language: filter rows (flat dicts) with comparisons joined by and / or / not.

    accuracy > 0.97 and model = cnn
    (model = mlp or model = cnn) and not message ~ rerun
    params.models.mlp.alpha <= 0.001 or labels = champion

- A field is a row's column (`commit`, `model`, `params.seed`, `metrics.models.cnn.accuracy`, ...) or the
  unique column whose name ends with `.<field>` (`alpha` when one model has one). An unknown or ambiguous
  field is an error that names the candidates.
- Operators: `=` (also `==`), `!=`, `<`, `<=`, `>`, `>=`, `~` (contains, case-insensitive), `!~`.
- Values: numbers, `true` / `false` / `null`, quoted strings ('...' or "..."), or bare words.
- Numbers compare as numbers; anything else compares as text. A column that holds only numbers is compared
  with numbers: `accuracy > abc` is an error, not a query that keeps nothing (`~` / `!~` match text
  anywhere). A row without the field fails a comparison
  (and `!=` / `!~` too: a missing value is not "different", it is unknown). A list (labels, a network's
  filters) holds when one of its items does; `!=` / `!~` when none does.
- `and` binds tighter than `or`; parentheses group; keywords are case-insensitive.

The page runs the same language in JavaScript (`board/static/query.js`); both are tested against the same
cases (`tests/core/query_cases.json`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mnist_lab.core.errors import MnistLabError

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]

OPERATORS = ("==", "!=", "<=", ">=", "!~", "=", "<", ">", "~")
KEYWORDS = ("and", "or", "not")
# ASCII whitespace only, in both twins: Python's \s and strip() take \x1c-\x1f as space, JavaScript's \s
# and trim() take \ufeff and other Unicode spaces: a query holding one read differently on the page and API
SPACE = " \t\n\r\f\v"
_TOKEN = re.compile(
    r"""[ \t\n\r\f\v]*(?:
        (?P<paren>[()])
      | (?P<op>==|!=|<=|>=|!~|=|<|>|~)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<word>[^ \t\n\r\f\v()=!<>~"']+)
    )""",
    re.VERBOSE,
)


class QueryError(MnistLabError):
    """A query that cannot be read, or names a field no row has."""


@dataclass(frozen=True)
class Token:
    kind: str  # paren, op, string, word, end
    text: str
    position: int  # 0-based character offset in the query


def tokenize(query: str) -> list[Token]:
    tokens = []
    position = 0
    while position < len(query):
        if query[position:].strip(SPACE) == "":
            break
        match = _TOKEN.match(query, position)
        if not match or match.end() == position:
            at = position + len(query[position:]) - len(query[position:].lstrip(SPACE))
            raise QueryError(f"query: cannot read {query[at : at + 12]!r} at character {at + 1}")
        kind = match.lastgroup or "word"
        text = match.group(kind)
        tokens.append(Token(kind, text, match.start(kind)))
        position = match.end()
    tokens.append(Token("end", "", len(query)))
    return tokens


def _literal(token: Token) -> Any:
    if token.kind == "string":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    lowered = token.text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    number = _number(token.text)
    return token.text if number is None else number


# ASCII digits only, as JavaScript's \d (Python's matches any script's digits, and float() reads them)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE | re.ASCII)


def _number(value: Any) -> float | None:
    """`value` as a number, if it is one or spells one (as JavaScript's twin reads numbers: no `1_000`)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer past float's range: JavaScript's Infinity
            return math.inf if value > 0 else -math.inf
    text = str(value).strip(SPACE)
    return float(text) if _NUMBER.fullmatch(text) else None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return _number_text(value)
    return str(value)


def _number_text(value: float) -> str:
    """A float as JavaScript's `String(number)` writes it (the page's parser matches `~` on that text):
    1e-05 is "0.00001", 1.0 is "1", 1e-07 is "1e-7" (ECMAScript's Number::toString, on the same shortest
    round-trip digits as Python's repr)."""
    import math
    from decimal import Decimal

    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k, n = len(digits), len(digits) + int(exponent)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = f"0.{'0' * -n}{digits}"
    else:
        e = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return f"-{text}" if sign else text


def compare(left: Any, operator: str, right: Any) -> bool:
    """One comparison, as the language defines it (a missing left value: always False). A list (labels, a
    network's filters) holds when one of its items does (`labels = champion`, `filters > 32`); `!=` and `!~`
    when none of them matches."""
    if isinstance(left, list | tuple):
        if operator in ("!=", "!~"):
            positive = "=" if operator == "!=" else "~"
            return not any(compare(item, positive, right) for item in left)
        return any(compare(item, operator, right) for item in left)
    if left is None and right is not None:
        return False
    if operator in ("~", "!~"):
        contains = _text(right).lower() in _text(left).lower()
        return contains if operator == "~" else not contains
    a, b = _number(left), _number(right)
    if (a is None) != (b is None) and operator not in ("=", "==", "!="):
        return False  # a number is neither more nor less than a word
    if a is None or b is None:
        a, b = _text(left), _text(right)  # type: ignore[assignment]
    if operator in ("=", "=="):
        return a == b
    if operator == "!=":
        return a != b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[operator]  # type: ignore[operator]


def resolve_field(name: str, columns: Iterable[str]) -> str:
    """The column `name` means: itself, or the only column ending with `.name`. Otherwise a QueryError
    naming the columns whose last part holds `name` (any case), or else the first columns in their order."""
    columns = list(columns)
    if name in columns:
        return name
    matches = sorted(column for column in columns if column.endswith(f".{name}"))
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:6]) + (", ..." if len(matches) > 6 else "")
        raise QueryError(f"query: {name!r} is ambiguous: say which one ({shown})")
    near = [column for column in columns if name.lower() in column.rsplit(".", 1)[-1].lower()]
    if near:
        shown = ", ".join(near[:6]) + (", ..." if len(near) > 6 else "")
        raise QueryError(f"query: no column {name!r}; did you mean {shown}?")
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    raise QueryError(f"query: no column {name!r} (columns: {shown})")


MAX_NESTING = 50  # `not`s and parentheses inside one another (the parser recurses on each: no stack overflow)


def sort_key(value: Any) -> tuple:
    """A column's order (the API's `sort=`, the page's header: query.js's sortOrder, tested on the same
    cases): numbers first, by value, then everything else by its text (a list as `[1, 2]`, a switch as
    `true`). One total order, also for a column mixing numbers and words (`max_features`: `sqrt`, 0.5)."""
    return (0, value) if _is_number(value) else (1, _sort_text(value))


def _sort_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_sort_text(item) for item in value) + "]"
    return _text(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_columns(rows: Iterable[Row]) -> set[str]:
    """The columns whose values (leaving out missing ones) are all numbers, or lists of numbers: the ones a
    comparison with a word is refused on."""
    numeric: dict[str, bool] = {}
    for row in rows:
        for column, value in row.items():
            if value is None or numeric.get(column) is False:
                continue
            items = value if isinstance(value, list) else [value]
            numeric[column] = bool(items) and all(_is_number(item) for item in items)
    return {column for column, is_numeric in numeric.items() if is_numeric}


class _Parser:
    def __init__(self, query: str, columns: Iterable[str], numeric: Iterable[str] = ()):
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0
        self.columns = list(columns)
        self.numeric = set(numeric)
        self.depth = 0

    def _deeper(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise QueryError(
                f"query: nested too deeply at character {position + 1} (at most {MAX_NESTING} "
                "`not`s and parentheses inside one another)"
            )

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def _keyword(self, word: str) -> bool:
        if self.token.kind == "word" and self.token.text.lower() == word:
            self.index += 1
            return True
        return False

    def _fail(self, expected: str) -> QueryError:
        found = f"{self.token.text!r}" if self.token.kind != "end" else "the end"
        return QueryError(f"query: expected {expected} at character {self.token.position + 1}, found {found}")

    def parse(self) -> Predicate:
        if self.token.kind == "end":
            return lambda row: True
        predicate = self._or()
        if self.token.kind != "end":
            raise self._fail("`and`, `or` or the end")
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._keyword("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._keyword("and"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def _not(self) -> Predicate:
        position = self.token.position
        if self._keyword("not"):
            self._deeper(position)
            inner = self._not()
            self.depth -= 1
            return lambda row: not inner(row)
        return self._atom()

    def _atom(self) -> Predicate:
        if self.token.kind == "paren" and self.token.text == "(":
            self._deeper(self.token.position)
            self.index += 1
            inner = self._or()
            if not (self.token.kind == "paren" and self.token.text == ")"):
                raise self._fail("`)`")
            self.index += 1
            self.depth -= 1
            return inner
        if self.token.kind not in ("word", "string") or self.token.text.lower() in KEYWORDS:
            raise self._fail("a field name")
        name = self.token.text if self.token.kind == "word" else _literal(self.token)
        field = resolve_field(name, self.columns)
        self.index += 1
        if self.token.kind != "op":
            raise self._fail(f"an operator ({' '.join(OPERATORS[5:] + OPERATORS[:5])}) after {name!r}")
        operator = self.token.text
        self.index += 1
        if self.token.kind not in ("word", "string") or (
            self.token.kind == "word" and self.token.text.lower() in KEYWORDS
        ):
            raise self._fail(f"a value after {operator!r}")
        # `~` matches text: a bare word keeps its spelling (`commit ~ 0123` is not the number 123)
        value = (
            self.token.text if operator in ("~", "!~") and self.token.kind == "word" else _literal(self.token)
        )
        word = isinstance(value, str) and _number(value) is None
        if word and field in self.numeric and operator not in ("~", "!~"):
            raise QueryError(
                f"query: {name!r} holds numbers, and {value!r} at character {self.token.position + 1} "
                "is not one: compare it with a number (or match its text with ~)"
            )
        self.index += 1
        return lambda row: compare(row.get(field), operator, value)


def parse_query(query: str, columns: Iterable[str], numeric: Iterable[str] = ()) -> Predicate:
    """A predicate over rows for `query` (the empty query keeps every row); QueryError names what is wrong
    and where. `columns`: every column a row may have (fields resolve against them); `numeric`: those that
    hold numbers alone (`numeric_columns`), which a comparison with a word is refused on."""
    return _Parser(query, columns, numeric).parse()


def filter_rows(
    rows: list[dict[str, Any]], query: str, columns: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The rows `query` keeps, in order. `columns`: the fields it may name, in the order an error lists
    them (default: every field of the rows, sorted)."""
    columns = sorted({column for row in rows for column in row}) if columns is None else columns
    keep = parse_query(query, columns, numeric_columns(rows))
    return [row for row in rows if keep(row)]
