#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one.
#
# 1. Makes sure the real services the tests use are there: Redis on 127.0.0.1:6379 and
#    PostgreSQL on 127.0.0.1:5432 (installed from Debian packages and started when missing),
#    plus Chromium and ChromeDriver for the browser tests.
# 2. Checks formatting, lints (the entry crate with every feature too), rustdoc warnings, the
#    minimum supported Rust version (scripts/msrv.py) and dependency licences (cargo-deny,
#    installed from crates.io when missing).
# 3. Runs every test in the workspace (unit, conformance on every store, HTTP, fault injection,
#    browser) and the benchmark harness on a tiny input.
#
# Nothing is skipped silently: a prerequisite that cannot be provided is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "could not install $*"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done
    return 1
}

ensure_redis() {
    command -v redis-server >/dev/null || apt_install redis-server
    if ! port_open 6379; then
        say "starting Redis on 127.0.0.1:6379"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_port 6379 || die "Redis did not start"
    fi
    redis-cli -p 6379 ping | grep -q PONG || die "Redis on 6379 does not answer PING"
}

ensure_postgres() {
    if ! command -v pg_ctlcluster >/dev/null; then
        apt_install postgresql
    fi
    if ! port_open 5432; then
        say "starting PostgreSQL on 127.0.0.1:5432"
        local version
        version=$(ls /etc/postgresql | sort -V | tail -1)
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || die "PostgreSQL did not start"
        wait_port 5432 || die "PostgreSQL is not listening on 5432"
    fi
    # The tests connect as postgres to the database `test`, over TCP with trust auth.
    if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
        su postgres -c "psql -Atc \"create database test\"" >/dev/null 2>&1 || true
        psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null \
            || die "cannot connect to postgres://postgres@127.0.0.1:5432/test (trust auth expected)"
    fi
}

ensure_chromium() {
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        apt_install chromium chromium-driver
    fi
    chromium --version >/dev/null 2>&1 || die "chromium does not run"
}

# The multi-instance tests (app/tests/multi_instance.rs) put three app processes behind HAProxy.
ensure_haproxy() {
    command -v haproxy >/dev/null || apt_install haproxy
    haproxy -v >/dev/null 2>&1 || die "haproxy does not run"
}

# axe-core, the browser test's WCAG 2.1 A/AA checker, from npm into target/npm (git-ignored).
# The version is the one app/tests/browser/axe.rs expects.
AXE_CORE_VERSION=4.14.1
ensure_axe_core() {
    local dir=target/npm
    local pkg="$dir/node_modules/axe-core/package.json"
    if [ ! -f "$pkg" ] || ! grep -q "\"version\": \"$AXE_CORE_VERSION\"" "$pkg"; then
        command -v npm >/dev/null || apt_install npm
        say "installing axe-core $AXE_CORE_VERSION (npm) into $dir"
        npm install --prefix "$dir" --no-save --no-audit --no-fund --no-package-lock \
            "axe-core@$AXE_CORE_VERSION" >/dev/null || die "could not install axe-core"
    fi
    export AXE_CORE_JS="$PWD/$dir/node_modules/axe-core/axe.min.js"
}

ensure_cargo_deny() {
    if ! cargo deny --version >/dev/null 2>&1; then
        say "installing cargo-deny (cargo install --locked; takes several minutes once)"
        cargo install cargo-deny --locked --quiet || die "could not install cargo-deny"
    fi
}

ensure_redis
ensure_postgres
ensure_chromium
ensure_axe_core
ensure_haproxy
ensure_cargo_deny

export RATATOSKR_TEST_PG_URL="${RATATOSKR_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
export RATATOSKR_TEST_REDIS_URL="${RATATOSKR_TEST_REDIS_URL:-redis://127.0.0.1:6379/}"
export RATATOSKR_ARTIFACTS="${RATATOSKR_ARTIFACTS:-$PWD/test-artifacts}"
mkdir -p "$RATATOSKR_ARTIFACTS"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The entry crate's examples and tests need its optional features (postgres, tower-sessions).
cargo clippy -p ratatoskr --all-features --all-targets --quiet -- -D warnings

say "cargo doc --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet

say "MSRV (scripts/msrv.py)"
python3 scripts/msrv.py

say "cargo deny check licenses bans"
cargo deny --log-level error check licenses bans

say "cargo test --workspace"
start=$(date +%s)
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$RATATOSKR_ARTIFACTS/cargo-test.log"
status=${PIPESTATUS[0]}
say "cargo test -p ratatoskr --all-features (every example, against the real services)"
cargo test -p ratatoskr --all-features --all-targets --no-fail-fast 2>&1 | tee -a "$RATATOSKR_ARTIFACTS/cargo-test.log"
entry_status=${PIPESTATUS[0]}
say "cargo test --workspace --doc"
cargo test --workspace --doc --no-fail-fast 2>&1 | tee -a "$RATATOSKR_ARTIFACTS/cargo-test.log"
doc_status=${PIPESTATUS[0]}
set -e
end=$(date +%s)

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$RATATOSKR_ARTIFACTS/cargo-test.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$RATATOSKR_ARTIFACTS/cargo-test.log" | awk '{s+=$1} END {print s+0}')
say "tests took $((end - start)) s"
echo "Summary: ${passed} passed, ${failed} failed"
[ "$status" = 0 ] && [ "$entry_status" = 0 ] && [ "$doc_status" = 0 ] || exit 1
