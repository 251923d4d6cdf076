#!/usr/bin/env python3
"""Where the hypervisor image's bytes go (docs/performance.md, "Image size").

Reads the symbol table of the EL2 ELF (default
target/aarch64-unknown-none-softfloat/release/microvisor, build it with `cargo xtask build`)
with `llvm-nm --size-sort -S`, and prints the sections, bytes of code by crate and the
largest functions, like `cargo bloat --crates` / `cargo bloat -n N`. A function is counted for
the crate its path starts with (`<T as Trait>::f` for the crate of `T`; generic code
instantiated for a crate's types is counted for the crate that defines the generic function,
e.g. `core` for sorts, `alloc` for BTreeMap).

usage: tools/imgsize/bloat.py [ELF] [-n N] [--group REGEX ...]
"""
import argparse
import collections
import re
import subprocess
import sys

DEFAULT = "target/aarch64-unknown-none-softfloat/release/microvisor"

LEGACY = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$C$": ",", "$u20$": " ",
          "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$u7b$": "{", "$u7d$": "}", "$u3b$": ";",
          "$u21$": "!", "$u22$": "\"", "$u2b$": "+", "$LP$": "(", "$RP$": ")", "..": "::"}


def clean(name):
    """llvm-nm leaves parts of legacy Rust mangling in place: finish it, drop the hash."""
    for k, v in LEGACY.items():
        name = name.replace(k, v)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    if name.startswith("_<"):
        name = name[1:]
    return name


def path_of(name):
    """The function's path with the `<T as Trait>` wrapper and generic arguments removed."""
    n = name
    while n.startswith("<"):
        n = n[1:]
    for prefix in ("&mut ", "&", "*const ", "*mut ", "dyn ", "["):
        while n.startswith(prefix):
            n = n[len(prefix):]
    n = re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", n)))
    n = n.split(" as ")[0].split(" (")[0]
    return n if re.match(r"[A-Za-z_][A-Za-z0-9_]*::", n) else None


def crate_of(name):
    path = path_of(name)
    if path:
        return path.split("::")[0]
    return "[symbols without a crate: assembly, compiler builtins]"


def module_of(name):
    """The crate and first module (`microvisor_kernel::start`), or the crate for its root."""
    path = path_of(name)
    if not path:
        return crate_of(name)
    parts = [p for p in path.split("::") if p and not p.startswith("_")]
    if len(parts) >= 3 and parts[0].startswith("microvisor"):
        return "::".join(parts[:2])
    return parts[0] if parts else crate_of(name)


def sections(elf):
    out = subprocess.run(["llvm-size", "-A", elf], check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and not parts[0].startswith(".debug"):
            rows.append((parts[0], int(parts[1])))
    return rows


def symbols(elf):
    out = subprocess.run(["llvm-nm", "--size-sort", "-S", "--demangle", elf], check=True,
                         capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4:
            continue
        _, size, kind, name = parts
        syms.append((int(size, 16), kind.lower(), clean(name)))
    return syms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("elf", nargs="?", default=DEFAULT)
    ap.add_argument("-n", type=int, default=30, help="largest functions shown")
    ap.add_argument("-m", "--modules", type=int, default=30, help="largest modules shown")
    ap.add_argument("--group", action="append", default=[],
                    help="also total the functions whose name matches this regex")
    args = ap.parse_args()

    print("section          bytes")
    for name, size in sections(args.elf):
        print(f"{name:<14} {size:>8}")
    syms = symbols(args.elf)
    text = [s for s in syms if s[1] in ("t", "w")]
    data = [s for s in syms if s[1] not in ("t", "w")]
    total = sum(s[0] for s in text)
    by_crate = collections.Counter()
    count = collections.Counter()
    for size, _, name in text:
        by_crate[crate_of(name)] += size
        count[crate_of(name)] += 1
    print(f"\ncode by crate ({total} bytes in {len(text)} functions)")
    for crate, size in by_crate.most_common():
        print(f"{size:>8} {100 * size / total:5.1f}% {count[crate]:>5}  {crate}")
    by_module = collections.Counter()
    for size, _, name in text:
        by_module[module_of(name)] += size
    print(f"\ncode by module (the {args.modules} largest)")
    for module, size in by_module.most_common(args.modules):
        print(f"{size:>8} {100 * size / total:5.1f}%  {module}")
    print(f"\n{args.n} largest functions")
    for size, _, name in sorted(text, reverse=True)[: args.n]:
        print(f"{size:>8}  {name[:150]}")
    groups = args.group or [r"^core::fmt|fmt$|Debug|Display", r"sort::", r"btree",
                            r"GenericShunt", r"panic"]
    print("\ngroups (functions whose name matches)")
    for g in groups:
        matched = [s for s in text if re.search(g, s[2])]
        print(f"{sum(s[0] for s in matched):>8} {len(matched):>5}  /{g}/")
    print("\nlargest data symbols")
    for size, kind, name in sorted(data, reverse=True)[:12]:
        print(f"{size:>8} {kind}  {name[:120]}")


if __name__ == "__main__":
    sys.exit(main())
