#!/usr/bin/env python3
"""Launcher, node and resolver depend only on shared libraries, never on each
other: no file outside node/ includes "node/...", and likewise for launcher/
and resolver/. Code that two of them need lives under common/ (common/mail/,
common/dns/). tests/ and fuzz/ may include what they test.

Usage: check_includes.py [source root]   (default: this file's repository)
Exit 0 when the rule holds, 1 with one line per offending include otherwise.
"""

import pathlib
import re
import sys

COMPONENTS = ("launcher", "node", "resolver", "imap")
MAY_INCLUDE_ANY = ("tests", "fuzz")
SOURCE_SUFFIXES = {".cpp", ".hpp", ".h", ".cc", ".ipp"}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^/">]+)/([^">]*)[">]')


def top_folders(root):
    # Build folders (build, build-asan, build-fuzz, ...) and hidden ones hold
    # no sources of ours.
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "build")))


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2]).resolve()
    problems = []
    scanned = {name: 0 for name in COMPONENTS}
    for folder in top_folders(root):
        for path in sorted(folder.rglob("*")):
            if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
                continue
            if folder.name in scanned:
                scanned[folder.name] += 1
            if folder.name in MAY_INCLUDE_ANY:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                m = INCLUDE.match(line)
                if m and m.group(1) in COMPONENTS and m.group(1) != folder.name:
                    why = ("shared code depends on none of them" if folder.name == "common"
                           else f"code that {folder.name}/ shares with it belongs in common/")
                    problems.append(f"{path.relative_to(root)}:{number}: includes \"{m.group(1)}/{m.group(2)}\": "
                                    f"only {m.group(1)}/ may include {m.group(1)}/ ({why})")
    # Seeing no sources at all would make the check pass for nothing.
    missing = [name for name, count in scanned.items() if count == 0]
    if missing:
        print(f"check_includes: no sources found in {', '.join(missing)} under {root}")
        return 1
    for line in problems:
        print(line)
    if problems:
        print(f"check_includes: {len(problems)} include(s) across component folders")
        return 1
    print(f"check_includes: {sum(scanned.values())} component sources, no include across "
          f"{', '.join(COMPONENTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
