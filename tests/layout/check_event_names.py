#!/usr/bin/env python3
"""Every event name the sources write is in the launcher's list of known
events (launcher/web/event_names.cpp), which GET /api/v1/events?events=...
checks names against: a new event missing there could not be asked for.

Found in node/, resolver/, launcher/ and common/ (.cpp, .hpp):
  {"event", "NAME"}            an event_log field
  {"event", c ? "A" : "B"}     either of two
  " event=NAME"                a line made by hand
  note(..., "NAME", ...)       the node's rate-limited trouble lines

Usage: check_event_names.py [source root]   (default: this file's repository)
Exit 0 when every name is known, 1 with one line per missing name otherwise.
"""

import pathlib
import re
import sys

FOLDERS = ("node", "resolver", "launcher", "common")
FIELD = re.compile(r'\{\s*"event"\s*,\s*([^}]*)\}')
QUOTED = re.compile(r'"([a-z][a-z0-9_]*)"')
RAW = re.compile(r'event=([a-z][a-z0-9_]*)')
NOTE = re.compile(r'\bnote\([^;]*?"([a-z][a-z0-9_]*)"')
KNOWN = re.compile(r'std::string_view\("([a-z0-9_]+)"\)')


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2]).resolve()
    names_file = root / "launcher" / "web" / "event_names.cpp"
    known = set(KNOWN.findall(names_file.read_text()))
    if not known:
        print(f"{names_file}: no event names found (is the list still std::string_view(\"...\") lines?)")
        return 1
    written = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".cpp", ".hpp") or "node_modules" in path.parts:
                continue
            text = path.read_text(errors="replace")
            found = set()
            for m in FIELD.finditer(text):  # the value, up to the pair's "}"
                found.update(QUOTED.findall(m.group(1)))
            found.update(RAW.findall(text))
            found.update(NOTE.findall(text))
            for name in found:
                written.setdefault(name, path.relative_to(root))
    missing = sorted(set(written) - known)
    for name in missing:
        print(f"{written[name]}: writes event '{name}', which launcher/web/event_names.cpp does not list")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
