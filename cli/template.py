"""Go's text/template, the part Docker's --format and `inspect -f` use.

    {{.State.Pid}}   {{json .Config}}   {{range .Mounts}}{{.Source}} {{end}}
    {{if .State.Running}}up{{else}}down{{end}}   {{index .Config.Labels "a"}}
    {{join .Args ","}}   {{len .Mounts}}   {{printf "%s:%d" .Name 3}}   {{upper .Name}}

A template is parsed once into a tree (text, actions, if, range, with) and
then run against a record.  Values print as Go prints them: a map as
map[k:v], a list as [a b], null as <nil>, booleans as true and false, so
that a script written for Docker reads the same text.  Errors are one line,
as Go's are: `template: ...`.
"""

from __future__ import annotations

import json
import re

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\|)|(\()|(\))|(-?\d+(?:\.\d+)?)\b|(\$?[\w.]*\.?[\w.]*|\.))')


class TemplateError(Exception):
    pass


def _go(value: object) -> str:
    """A value as Go's fmt prints it with %v."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _printf(form: str, *args: object) -> str:
    """fmt.Sprintf: %v and %s print as Go does, %q quotes, %t is a bool, and
    the numeric verbs (%d %x %X %o %f %e %g %c) with their flags, width and
    precision are C's, as Go's are."""
    values = iter(args)

    def verb(m: re.Match) -> str:
        flags, width, precision, kind = m[1], m[2] or "", m[3], m[4]
        if kind == "%":
            return "%"
        value = next(values, None)
        spec = f"%{flags}{width}{'.' + precision if precision is not None else ''}"
        if kind in "vst":
            return (spec + "s") % _go(value)
        if kind == "q":
            return (spec + "s") % json.dumps(value if isinstance(value, str) else _go(value))
        return (spec + kind) % value

    return re.sub(r"%([-+ #0]*)(\d+)?(?:\.(\d+))?([vstqdxXofegc%])", verb, form)


FUNCTIONS = {
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "join": lambda v, sep: sep.join(_go(x) for x in v or []),
    "len": lambda v: len(v or []),
    "lower": lambda v: _go(v).lower(),
    "upper": lambda v: _go(v).upper(),
    "title": lambda v: _go(v).title(),
    "split": lambda v, sep: _go(v).split(sep),
    "printf": _printf,
    "print": lambda *v: "".join(_go(x) for x in v),
    "println": lambda *v: " ".join(_go(x) for x in v) + "\n",
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda v: not v,  # Go's truth is Python's: false, 0, nil, "" and empty lists and maps are false
    "and": lambda first, *v: next((x for x in (first, *v) if not x), (first, *v)[-1]),
    "or": lambda first, *v: next((x for x in (first, *v) if x), (first, *v)[-1]),
}


def _index(value: object, *keys: object) -> object:
    for key in keys:
        try:
            value = value[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            if isinstance(value, dict):
                return ""  # Go: a map's missing key is its zero value, "" for Docker's map[string]string
            raise TemplateError(f"error calling index: cannot index {_go(value)} with {_go(key)}") from None
    return value


FUNCTIONS["index"] = _index


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unexpected {text[pos:].strip()[:10]!r} in command")
        pos = m.end()
        kinds = ("string", "raw", "pipe", "open", "close", "number", "word")
        kind = next(k for k, g in zip(kinds, m.groups(), strict=True) if g is not None)
        out.append((kind, m.group(m.lastindex)))
    return out


def _pipeline(tokens: list[tuple[str, str]]) -> list[list]:
    """Commands separated by |, each a list of operands (nested pipelines in parentheses)."""
    commands, current, stack = [], [], []
    for kind, value in tokens:
        if kind == "pipe":
            commands.append(current)
            current = []
        elif kind == "open":
            stack.append((commands, current))
            commands, current = [], []
        elif kind == "close":
            if not stack:
                raise TemplateError("unexpected right paren")
            inner = [*commands, current]
            commands, current = stack.pop()
            current.append(("pipeline", inner))
        else:
            current.append((kind, value))
    if stack:
        raise TemplateError("unclosed left paren")
    commands.append(current)
    if any(not c for c in commands):
        raise TemplateError("missing command in pipeline")
    return commands


def parse(template: str) -> list:
    """The tree: text strings and (kind, pipeline, children, else-children) nodes."""
    root: list = []
    stack = [(None, root)]
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m[1]:
            text = text.rstrip()
        pending_trim = bool(m[3])
        if text:
            stack[-1][1].append(text)
        body = m[2].strip()
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word):]
        if body.startswith("/*"):
            pass
        elif word in ("if", "range", "with"):
            node = [word, _pipeline(_tokens(rest)), [], None]
            stack[-1][1].append(node)
            stack.append((node, node[2]))
        elif word == "else":
            node = stack[-1][0]
            if node is None or node[3] is not None:
                raise TemplateError("unexpected {{else}}")
            node[3] = []
            stack[-1] = (node, node[3])
            if rest.strip():  # {{else if ...}}: a new if inside the else
                inner_word = rest.split(None, 1)[0]
                if inner_word != "if":
                    raise TemplateError(f"unexpected {rest.strip()!r} after else")
                inner = ["if", _pipeline(_tokens(rest.strip()[2:])), [], None, "chained"]
                node[3].append(inner)
                stack.append((inner, inner[2]))
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("unexpected {{end}}")
            while len(stack[-1][0]) == 5:  # else-if chains end with their if
                stack.pop()
            stack.pop()
        else:
            stack[-1][1].append(["action", _pipeline(_tokens(body)), [], None])
        pos = m.end()
        if pending_trim:
            following = template[pos:]
            pos += len(following) - len(following.lstrip())
    if "{{" in template[pos:]:
        raise TemplateError("unclosed action")
    if len(stack) > 1:
        raise TemplateError(f"unexpected EOF: {{{{{stack[-1][0][0]}}}}} has no {{{{end}}}}")
    if pos < len(template):
        root.append(template[pos:])
    return root


def _field(value: object, path: str, whole: str) -> object:
    for key in filter(None, path.split(".")):
        if not isinstance(value, dict):
            raise TemplateError(f"executing \"\" at <{whole}>: can't evaluate field {key} in type {_go(value)[:20]}")
        if key not in value:
            raise TemplateError(f"executing \"\" at <{whole}>: map has no entry for key \"{key}\"")
        value = value[key]
    return value


def _operand(op: tuple, dot: object, root: object) -> object:
    kind, value = op
    if kind == "string":  # Go's escapes are C's, as Python's are
        import ast

        try:
            return ast.literal_eval(value)
        except (SyntaxError, ValueError):
            raise TemplateError(f"bad string {value}") from None
    if kind == "raw":
        return value[1:-1]
    if kind == "number":
        return float(value) if "." in value else int(value)
    if kind == "pipeline":
        return _run_pipeline(value, dot, root)
    if value in ("true", "false"):
        return value == "true"
    if value in ("nil",):
        return None
    if value == "$" or value.startswith("$."):  # $ is the record the template started with
        return _field(root, value[1:], value)
    if value.startswith("$"):
        raise TemplateError(f'undefined variable "{value}"')
    if value.startswith("."):
        return _field(dot, value, value)
    raise TemplateError(f'function "{value}" not defined')


def _run_pipeline(commands: list, dot: object, root: object) -> object:
    result: object = _NOTHING
    for command in commands:
        head = command[0]
        if head[0] == "word" and head[1] in FUNCTIONS:
            args = [_operand(op, dot, root) for op in command[1:]]
            if result is not _NOTHING:
                args.append(result)  # a pipeline passes its value as the last argument
            try:
                result = FUNCTIONS[head[1]](*args)
            except (TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError) as e:
                raise TemplateError(f"error calling {head[1]}: {e}") from None
        elif head[0] == "word" and not head[1].startswith((".", "$")) and head[1] not in ("true", "false", "nil"):
            raise TemplateError(f'function "{head[1]}" not defined')
        elif len(command) > 1:
            raise TemplateError(f"can't give argument to non-function {_go(head[1])[:40]}")
        else:
            result = _operand(head, dot, root)
    return result


_NOTHING = object()


def _execute(nodes: list, dot: object, root: object, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
            continue
        kind, pipeline, body, other = node[:4]
        value = _run_pipeline(pipeline, dot, root)
        if kind == "action":
            out.append(_go(value))
        elif kind == "if":
            _execute(body if value else other or [], dot, root, out)
        elif kind == "with":
            _execute(body if value else other or [], value if value else dot, root, out)
        elif kind == "range":
            if isinstance(value, dict):
                items = [value[k] for k in sorted(value)]  # Go ranges over a map in key order
            elif isinstance(value, list) or value is None:
                items = value or []
            elif isinstance(value, int) and not isinstance(value, bool):
                items = list(range(value))  # Go 1.22: range over an integer
            else:
                raise TemplateError(f"range can't iterate over {_go(value)}")
            if not items:
                _execute(other or [], dot, root, out)
            for item in items:
                _execute(body, item, root, out)


def render(template: str, record: object) -> str:
    """The template run against one record; TemplateError says what went wrong."""
    out: list[str] = []
    try:
        _execute(parse(template), record, record, out)
    except RecursionError:
        raise TemplateError("the template is nested too deeply") from None
    return "".join(out)
