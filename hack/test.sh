#!/usr/bin/env bash
# `make test`: lint beside the whole pytest suite, which runs on several xdist workers sharing one
# local cluster (tests/e2e/support/shared.py). Both must pass.
#
#   KUBEINFER_TEST_WORKERS  pytest-xdist workers (default 5: on 2 cores most e2e time is waiting on pods;
#                           0 runs pytest in one process)
#   extra arguments go to pytest (e.g. `hack/test.sh -k faults`)
set -uo pipefail
cd "$(dirname "$0")/.."
workers="${KUBEINFER_TEST_WORKERS:-5}"
# torch.compile tests reuse inductor's compiled kernels across runs (the clone is fresh, the cache is not).
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${KUBEINFER_CACHE:-${HOME}/.cache/kubeinfer}/inductor}"
# One CPU thread per test process (torch's default is one per core): several workers share the cores, and
# OpenMP threads of oversubscribed processes spin-wait for each other (a tiny-Flux run 2-4x the CPU).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
lint_log="$(mktemp)"
trap 'rm -f "${lint_log}"' EXIT

start=${SECONDS}
# The project's own bytecode too (the venv's is compiled when it is made): each test starts hundreds of
# processes, and PYTHONDONTWRITEBYTECODE or a read-only tree would make each compile these again.
.venv/bin/python -m compileall -q -j0 api operator runtime tests >/dev/null
make --no-print-directory lint >"${lint_log}" 2>&1 &
lint_pid=$!

xdist=()
((workers > 0)) && xdist=(-n "${workers}" --dist loadgroup)
.venv/bin/python -m pytest tests "${xdist[@]}" --durations=25 "$@"
pytest_rc=$?

wait "${lint_pid}"
lint_rc=$?
echo "---- lint (ruff, mypy) ----"
cat "${lint_log}"
echo "---- test.sh: pytest exit ${pytest_rc}, lint exit ${lint_rc}, $((SECONDS - start)) s ----"
((pytest_rc == 0 && lint_rc == 0))
