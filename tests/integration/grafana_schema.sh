#!/usr/bin/env bash
# The Grafana dashboards (contrib/grafana/*.json) against Grafana's own
# dashboard schema: tests/grafana/check.mjs compiles each, as a value of
# @grafana/schema's Dashboard type (the TypeScript types Grafana generates
# from its CUE schema), with the TypeScript compiler in strict mode, so that
# a misspelt, misplaced or mistyped field is an error. Both packages are
# pinned in tests/grafana/package-lock.json and installed from the npm
# registry by this test (into $top_builddir/tests/grafana/node_modules).
# That the queries return data is prometheus.sh's and influxdb.sh's part.
#
# The checker itself is checked first: dashboards with a misspelt field, a
# colour mode that is no value of its enum, and a panel's gridPos of the
# wrong type must be refused, and a copy with the enum values Grafana
# writes accepted.
. "$top_srcdir/tests/lib.sh"
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-240}

SRC=$top_srcdir/tests/grafana
DIR=$top_builddir/tests/grafana
NPM_TIMEOUT=150

# install: tests/grafana/ (its packages pinned by package-lock.json)
# installed into $DIR.
install() {
  BM_NPM_TIMEOUT=$NPM_TIMEOUT bm_npm_install "$SRC" "$DIR" @grafana/schema check.mjs
}

check() { node "$DIR/check.mjs" "$@" >"$T/check.out" 2>&1; }

# variant NAME JQ-LIKE-NODE-EXPR: writes $T/NAME.json, the Prometheus
# dashboard changed by a JavaScript statement on `d`.
variant() {
  node -e '
    const fs = require("fs");
    const d = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    eval(process.argv[2]);
    fs.writeFileSync(process.argv[3], JSON.stringify(d, null, 2));
  ' "$top_srcdir/contrib/grafana/bimetri-prometheus.json" "$2" "$T/$1.json"
}

command -v node >/dev/null && command -v npm >/dev/null &&
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'
bm_ok $? "node >= 18 and npm are installed" || bm_bail "install Node.js with npm"
t0=$EPOCHSECONDS
install
bm_ok $? "@grafana/schema and typescript installed from tests/grafana/package-lock.json in $((EPOCHSECONDS - t0))s" ||
  { bm_diag "$(tail -n 20 "$T/npm.out")"; bm_bail "npm ci failed (see $T/npm.out)"; }
bm_is "$(node -p 'require(process.argv[1]).version' "$DIR/node_modules/@grafana/schema/package.json")" \
  13.2.3 "the pinned schema version is the one installed"

# The checker refuses what Grafana's schema refuses.
variant misspelt 'd.panels[0].gridPoss = d.panels[0].gridPos; delete d.panels[0].gridPos;'
bm_check "a misspelt panel field is refused" bash -c "! node '$DIR/check.mjs' '$T/misspelt.json' >'$T/m.out' 2>&1"
bm_like "$(cat "$T/m.out")" "gridPoss" "and named"
variant badenum 'd.panels.find(p => p.fieldConfig?.defaults?.color).fieldConfig.defaults.color.mode = "thresholdz";'
bm_check "a colour mode that is no FieldColorModeId value is refused" bash -c "! node '$DIR/check.mjs' '$T/badenum.json' >'$T/e.out' 2>&1"
bm_like "$(cat "$T/e.out")" "thresholdz" "and named"
variant badtype 'd.panels[0].gridPos = "top";'
bm_check "a gridPos that is no object is refused" bash -c "! node '$DIR/check.mjs' '$T/badtype.json' >'$T/t.out' 2>&1"
variant old 'd.schemaVersion = 30;'
bm_check "a schemaVersion older than Grafana 9's is refused" bash -c "! node '$DIR/check.mjs' '$T/old.json' >'$T/o.out' 2>&1"
variant same ''
check "$T/same.json"
bm_ok $? "an unchanged copy is accepted" || bm_diag "$(cat "$T/check.out")"

# The dashboards.
for f in "$top_srcdir"/contrib/grafana/*.json; do
  check "$f"
  bm_ok $? "$(basename "$f") is a valid Grafana dashboard: $(tail -n 1 "$T/check.out" | sed 's/^.*: valid: //')" ||
    bm_diag "$(cat "$T/check.out")"
done
bm_done
