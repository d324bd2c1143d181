#!/usr/bin/env bash
# System packages the test suite needs beyond Python: none yet for the core.
set -euo pipefail
