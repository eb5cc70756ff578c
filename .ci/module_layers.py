#!/usr/bin/env python3
"""Checks popgate's one-way layering: the top-level modules of proxy/ are declared in lib.rs lowest
layer first, and a module may name (`crate::X`) only modules declared before it. That rules out
cycles and keeps new code from reaching up a layer. Test code (`#[cfg(test)] mod` onwards) is
exempt. Prints every offending edge with its file and exits 1; prints the layer order and exits 0
otherwise.

    python3 .ci/module_layers.py [CRATE_DIR]   (default: proxy)
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "proxy"
lib = open(os.path.join(root, "lib.rs"), encoding="utf-8").read()
order = re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", lib, re.M)
if not order:
    sys.exit(f"error: {root}/lib.rs declares no modules")
rank = {name: i for i, name in enumerate(order)}

def files_of(name):
    single = os.path.join(root, name + ".rs")
    folder = os.path.join(root, name)
    out = [single] if os.path.isfile(single) else []
    if os.path.isdir(folder):
        for d, _, fs in os.walk(folder):
            out += [os.path.join(d, f) for f in sorted(fs) if f.endswith(".rs")]
    return out

path_re = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
group_re = re.compile(r"\bcrate::\{([^}]*)\}")
test_cut = re.compile(r"^\s*#\[cfg\(test\)\]\s*\n\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s", re.M)
comment = re.compile(r"//.*$", re.M)

bad = []
for name in order:
    for path in files_of(name):
        text = open(path, encoding="utf-8", errors="replace").read()
        cut = test_cut.search(text)
        if cut:
            text = text[: cut.start()]
        text = comment.sub("", text)
        used = set(path_re.findall(text))
        for group in group_re.findall(text):
            used.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        for target in sorted(used):
            if target in rank and rank[target] > rank[name]:
                bad.append(f"{os.path.relpath(path)}: {name} (layer {rank[name]}) uses crate::{target} (layer {rank[target]}, higher)")

# The binary's own modules (declared in main.rs) sit above every layer.
main_rs = os.path.join(root, "main.rs")
binary_mods = set()
if os.path.isfile(main_rs):
    binary_mods = set(re.findall(r"^\s*mod\s+([a-z_][a-z0-9_]*)\s*;", open(main_rs, encoding="utf-8").read(), re.M))
unlisted = sorted(
    n[:-3] if n.endswith(".rs") else n
    for n in os.listdir(root)
    if n not in ("lib.rs", "main.rs")
    and (n[:-3] if n.endswith(".rs") else n) not in binary_mods
    and (n.endswith(".rs") or os.path.isdir(os.path.join(root, n)))
    and (n[:-3] if n.endswith(".rs") else n) not in rank
)
for n in unlisted:
    bad.append(f"{root}/{n}: a top-level module that lib.rs does not declare")

# Among the binary's modules, `cli` (the flags) is the lowest: each command module may use it,
# and no command module uses another or is used by `cli`. No cycle can form among them either.
for name in sorted(binary_mods):
    path = os.path.join(root, name + ".rs")
    if not os.path.isfile(path):
        continue
    text = comment.sub("", open(path, encoding="utf-8", errors="replace").read())
    used = set(path_re.findall(text))
    for group in group_re.findall(text):
        used.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    for target in sorted(used & binary_mods - {name}):
        if name == "cli" or target != "cli":
            bad.append(f"{os.path.relpath(path)}: binary module {name} uses crate::{target} (only `cli` may be used, and `cli` uses none)")

if bad:
    print("module layering broken (a lower layer must not import a higher one):")
    print("\n".join("  " + b for b in bad))
    sys.exit(1)
print("module layers (lowest first): " + " -> ".join(order))
