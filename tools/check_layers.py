#!/usr/bin/env python3
"""The layering check (ctest `layering`, docs/architecture.md): every #include "..." in the
product's sources must point down the stack or within its own layer.

  util < kernels (common < cpu, cuda) < model < weights < runtime < data < eval < train < serve
  wbc, the white-blood-cell application, sits above them all: only tools/ may include it.
  tools/ (the CLI) may include anything; tests/ and bench/ are not checked.

kernels/cpu and kernels/cuda are siblings: each may include kernels/common, neither the other.
Exit 0 when clean; otherwise print one line per violation (file:line: what, and the rule) and exit 1.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (folder prefix, layer name, rank). Longest prefix wins.
LAYERS = [
    ("engine/util/", "util", 0),
    ("kernels/common/", "kernels/common", 1),
    ("kernels/cpu/", "kernels/cpu", 2),
    ("kernels/cuda/", "kernels/cuda", 2),
    ("engine/model/", "model", 3),
    ("weights/", "weights", 4),
    ("engine/dist/", "dist", 5),
    ("engine/runtime/", "runtime", 6),
    ("engine/data/", "data", 7),
    ("engine/eval/", "eval", 8),
    ("engine/train/", "train", 9),
    ("engine/serve/", "serve", 10),
    ("engine/wbc/", "wbc", 11),
    ("tools/", "tools", 12),
]
SIBLINGS = {("kernels/cpu", "kernels/cuda"), ("kernels/cuda", "kernels/cpu")}
SOURCE_DIRS = ["engine", "kernels", "weights", "tools"]
EXTS = {".h", ".hpp", ".cpp", ".cu", ".cuh"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(rel):
    best = None
    for prefix, name, rank in LAYERS:
        if rel.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, name, rank)
    return best


def check(root):
    errors = []
    for d in SOURCE_DIRS:
        for path in sorted((root / d).rglob("*")):
            if path.suffix not in EXTS or "shipped" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            me = layer_of(rel)
            if me is None:
                errors.append(f"{rel}: not in any layer (engine/ files live in a layer folder)")
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = m.group(1)
                if not (root / target).exists():
                    continue  # a system or third-party header spelled with quotes
                them = layer_of(target)
                if them is None:
                    errors.append(f"{rel}:{n}: includes {target}, which is in no layer")
                elif (me[1], them[1]) in SIBLINGS:
                    errors.append(f"{rel}:{n}: {me[1]} includes {target} ({them[1]}): the CPU and CUDA kernels "
                                  "share code only through kernels/common")
                elif them[2] > me[2]:
                    errors.append(f"{rel}:{n}: {me[1]} includes {target} ({them[1]}), a layer above it")
    return errors


def main():
    root = pathlib.Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    errors = check(root)
    for e in errors:
        print(e)
    if errors:
        print(f"layering: {len(errors)} include(s) against the layers (docs/architecture.md)")
        return 1
    print("layering: every include points down the stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
