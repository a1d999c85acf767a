"""Generate the sync twins of hand-written async modules, as httpcore's scripts/unasync.py does.

    python scripts/unasync.py            # rewrite every twin
    python scripts/unasync.py --check    # exit 1, showing the first difference, if one is stale

Run from anywhere; paths are relative to the repository root. Substitutions are plain regular
expressions applied line by line, in order; a whole-line substitution ends the line's rewrite.
Every substitution must be used at least once, so a rename in the source cannot leave one
silently dead.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = ROOT / "src" / "poolwatch" / "adapters"

#: (async source, generated sync twin)
PAIRS = [(ADAPTERS / "_httpx_async.py", ADAPTERS / "_httpx_sync.py")]

#: Whole lines replaced as they are (the header that says which file to edit).
LINES = {
    '"""The hooks on httpcore\'s async connection pool.\n': (
        '"""The hooks on httpcore\'s sync connection pool.\n'
    ),
    "Written by hand; scripts/unasync.py generates _httpx_sync.py from it (`--check` in CI).\n": (
        "GENERATED from _httpx_async.py by scripts/unasync.py: edit that file, rerun the script.\n"
    ),
}

SUBS = [
    (r"\basync def\b", "def"),
    (r"\bawait ", ""),
    (r"\bhandle_async_request\b", "handle_request"),
    (r"\bAsync(?=[A-Z])", ""),
    (r"_async\b", "_sync"),
    (r"aclose\b", "close"),
]
COMPILED = [(re.compile(pattern), repl) for pattern, repl in SUBS]


def unasync_lines(lines: list[str], used: set[str]) -> list[str]:
    out = []
    for line in lines:
        if line in LINES:
            used.add(line)
            out.append(LINES[line])
            continue
        text = line
        for regex, repl in COMPILED:
            new = regex.sub(repl, text)
            if new != text:
                used.add(regex.pattern)
            text = new
        out.append(text)
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    used: set[str] = set()
    status = 0
    for source, target in PAIRS:
        expected = unasync_lines(source.read_text().splitlines(keepends=True), used)
        if not check:
            target.write_text("".join(expected))
            print(f"{source.relative_to(ROOT)} -> {target.relative_to(ROOT)}")
            continue
        actual = target.read_text().splitlines(keepends=True) if target.exists() else []
        if actual != expected:
            status = 1
            print(f"{target.relative_to(ROOT)} is stale: run python scripts/unasync.py")
            for number, (want, have) in enumerate(zip(expected, actual, strict=False), 1):
                if want != have:
                    print(
                        f"  line {number}: expected {want!r}\n  {' ' * len(str(number))}"
                        f"        found    {have!r}"
                    )
                    break
            else:
                print(f"  expected {len(expected)} lines, found {len(actual)}")
    unused = [p for p, _ in SUBS if p not in used] + [line for line in LINES if line not in used]
    if unused:
        print(f"unused substitutions (fix scripts/unasync.py): {unused}")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
