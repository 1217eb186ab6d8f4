#!/usr/bin/env bash
# Installs the reference GPT-2 encoders (js-tiktoken 1.0.21, gpt-tokenizer 4.0.0; package.json and
# package-lock.json pin them) into tests/data/js/node_modules for the differential test and the tokenizer
# benchmark. Idempotent: does nothing when both are installed at the pinned versions. Never fails: without node,
# npm or the registry it says so, and the differential test skips with a message.
set -uo pipefail
cd "$(dirname "$0")"

installed() {
  node -e '
    const fs = require("fs");
    const want = {"js-tiktoken": "1.0.21", "gpt-tokenizer": "4.0.0"};
    for (const [name, version] of Object.entries(want)) {
      const pkg = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, "utf8"));
      if (pkg.version !== version) process.exit(1);
    }' 2>/dev/null
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "tests/data/js/setup.sh: node or npm not found; the GPT-2 differential test will be skipped" >&2
  exit 0
fi
if installed; then
  echo "tests/data/js/setup.sh: js-tiktoken and gpt-tokenizer already installed"
  exit 0
fi
if npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 && installed; then
  echo "tests/data/js/setup.sh: installed js-tiktoken 1.0.21 and gpt-tokenizer 4.0.0"
else
  echo "tests/data/js/setup.sh: npm ci failed (offline?); the GPT-2 differential test will be skipped" >&2
fi
exit 0
