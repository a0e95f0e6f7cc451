# Sourced by the bench/ scripts (run from the repository root).

# release_bin NAME PACKAGE: prints the path of release binary NAME, building PACKAGE when it is
# not built yet. $CARGO_TARGET_DIR is honoured.
release_bin() {
    local name=$1 package=$2 candidate
    for candidate in "${CARGO_TARGET_DIR:-target}/release/$name" "target/release/$name"; do
        if [ -x "$candidate" ]; then
            realpath "$candidate"
            return
        fi
    done
    cargo build --release -q -p "$package" >&2
    realpath "${CARGO_TARGET_DIR:-target}/release/$name"
}

# write_section NAME TEXT: replaces what stands between `<!-- bench:NAME -->` and
# `<!-- /bench:NAME -->` in BENCHMARKS.md with TEXT, leaving the other sections alone.
write_section() {
    SECTION_NAME=$1 SECTION_TEXT=$2 python3 - <<'PY'
import os
name, body = os.environ["SECTION_NAME"], os.environ["SECTION_TEXT"].strip("\n")
start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
text = open("BENCHMARKS.md").read()
a, b = text.index(start) + len(start), text.index(end)
open("BENCHMARKS.md", "w").write(text[:a] + "\n" + body + "\n" + text[b:])
PY
}
