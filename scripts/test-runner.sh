#!/usr/bin/env bash
# cargo's runner for the test binaries of scripts/test.sh (set through
# CARGO_TARGET_<host>_RUNNER, which is not part of any build fingerprint: nothing is
# rebuilt). It runs the binary as cargo would, with libtest's per-test wall time
# (`--report-time`: "test NAME ... ok <12.345s>"), an unstable libtest option that
# needs RUSTC_BOOTSTRAP=1. That is set here, in the test binary's environment only:
# set for cargo or rustc it would change dependencies' nightly probes and rebuild
# them. Every test binary of the workspace uses libtest's harness.
set -euo pipefail
bin=$1
shift
export RUSTC_BOOTSTRAP=1
exec "$bin" -Zunstable-options --report-time "$@"
