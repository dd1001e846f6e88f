#!/bin/sh
# Create the dev overlay's secret files (git-ignored) from the committed *.example files,
# keeping every file that already exists. The examples hold obviously fake values meant for a
# laptop cluster only; the prod overlay has its own secrets/ and never uses them.
# skaffold runs this before rendering the dev overlay; it is safe to run by hand.
set -eu
cd "$(dirname "$0")"
for example in *.example; do
    target="${example%.example}"
    if [ ! -e "$target" ]; then
        cp "$example" "$target"
        echo "dev secrets: created $target from $example (fake values, dev only)"
    fi
done
