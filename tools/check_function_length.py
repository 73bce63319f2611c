#!/usr/bin/env python3
"""Function length check (ctest `function_length`): no function body in engine/ is longer than
MAX_LINES lines, except those listed in EXCEPTIONS with the reason.

A function is a brace block whose header (the text since the previous ';', '{' or '}') has a
parameter list and is not a control statement, a lambda or an initialiser, found at namespace or
class scope. Comments, strings and character literals are blanked first, so braces in them do not
count. This is a scanner, not a C++ parser: good enough to keep long functions from coming back.
Usage: check_function_length.py [ROOT] [--list N]  (--list prints every function longer than N).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 120
EXTS = {".h", ".cpp", ".cu", ".cuh"}
# "file:function" -> why it may be longer.
EXCEPTIONS = {
    "engine/wbc/taxonomy.cpp:table": "a table: the 14 classes' names, groups and clinical notes, one entry each",
}
CONTROL = re.compile(r"^\s*(if|for|while|switch|catch|do|else|return|case)\b")
SCOPE = re.compile(r"\b(namespace|class|struct|union|enum)\b")


def blank(text):
    """Comments, strings, char literals and preprocessor lines -> spaces (newlines kept, so line
    numbers hold)."""
    text = re.sub(r"(?m)^[ \t]*#.*$", lambda m: " " * len(m.group(0)), text)
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif text.startswith('R"', i):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if not m:
                out.append(c); i += 1; continue
            end = ")" + m.group(1) + '"'
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(" " * (min(j + 1, n) - i)); i = min(j + 1, n)
        else:
            out.append(c); i += 1
    return "".join(out)


def functions(text):
    """Yields (name, first_line, n_lines) for function bodies at namespace / class scope."""
    src = blank(text)
    stack = []  # kinds of the open braces: "scope", "func", "other"
    header_start = 0
    line_of = lambda pos: src.count("\n", 0, pos) + 1
    for pos, c in enumerate(src):
        if c == "{":
            header = src[header_start:pos]
            in_code = any(k == "func" or k == "other" for k in stack)
            h = " ".join(header.split())
            m = SCOPE.search(h)
            if m and "(" not in h[:m.start()] and not in_code:
                kind = "scope"  # namespace / class body: functions may start inside it
            elif not in_code and "(" in h and not CONTROL.match(h) and "=" not in h.split("(")[0] and not h.startswith("["):
                kind = "func"
                name = re.findall(r"([~\w:]+)\s*\(", h)
                stack.append(("func", pos, name[0] if name else "?"))
                header_start = pos + 1
                continue
            else:
                kind = "other"
            stack.append((kind, pos, None))
            header_start = pos + 1
        elif c == "}":
            if stack:
                kind, start, name = stack.pop()
                if kind == "func":
                    a, b = line_of(start), line_of(pos)
                    yield name, a, b - a - 1
            header_start = pos + 1
        elif c == ";":
            header_start = pos + 1


def main():
    args = sys.argv[1:]
    list_n = None
    if "--list" in args:
        k = args.index("--list"); list_n = int(args[k + 1]); del args[k:k + 2]
    root = pathlib.Path(args[0]).resolve() if args else ROOT
    long_ones = []
    for path in sorted((root / "engine").rglob("*")):
        if path.suffix not in EXTS:
            continue
        rel = path.relative_to(root).as_posix()
        for name, line, n in functions(path.read_text(errors="replace")):
            if list_n is not None and n > list_n:
                print(f"{n:5d}  {rel}:{line}  {name}")
            if n > MAX_LINES and f"{rel}:{name}" not in EXCEPTIONS:
                long_ones.append(f"{rel}:{line}: {name} is {n} lines (at most {MAX_LINES})")
    for e in long_ones:
        print(e)
    if long_ones:
        print(f"function_length: {len(long_ones)} function(s) over {MAX_LINES} lines in engine/")
        return 1
    print(f"function_length: no function in engine/ over {MAX_LINES} lines outside the listed exceptions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
