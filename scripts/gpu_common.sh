# Shared by the GPU check scripts (sourced, not run): a budget-aware step runner and the set-up
# both need. The sourcing script sets BUDGET (seconds for the whole run) first.
#   run NAME SECONDS COMMAND...   the command under a timeout (at most what is left of the budget),
#                                 its output also in $OUT/NAME.txt; a failure never stops the script
#   section TITLE                 a heading;   summary   each step's exit status and seconds
#   machine SECONDS               the step that names the GPUs and the versions of python, torch, triton
#   tests NAME SECONDS ARGS...    pytest ARGS as step NAME, or a note that pytest is missing
# After sourcing: PY (python), HAS_PYTEST (1/0), PYTHONPATH with the repository (and, where hydra,
# omegaconf or pytest are missing, wheels from ./.whl installed into /tmp/lstm_mt_site),
# LSTM_MT_DATA_MIRROR (the first of .devdata, shared/data, ../shared/data holding Multi30k).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR="${OUT:-}"
PY="${PYTHON:-python3}"
STATUS=()
[ -n "$OUT_DIR" ] && mkdir -p "$OUT_DIR"

section() { printf '\n==================== %s ====================\n' "$*"; }

run() {
    local name=$1 seconds=$2 start=$SECONDS rc left=$((BUDGET - SECONDS))
    shift 2
    if [ "$left" -lt 10 ]; then
        echo "skipped: the ${BUDGET} s budget is spent"
        STATUS+=("$name: skipped, budget spent")
        return
    fi
    [ "$seconds" -gt "$left" ] && seconds=$left
    if [ -n "$OUT_DIR" ]; then
        timeout -k 5 "$seconds" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
        rc=${PIPESTATUS[0]}
    else
        timeout -k 5 "$seconds" "$@" 2>&1
        rc=$?
    fi
    STATUS+=("$name: exit $rc ($((SECONDS - start)) s)$([ "$rc" = 124 ] && echo ", timed out after $seconds s")")
}

machine() {
    run machine "$1" bash -c "nvidia-smi -L; nproc; $PY -c 'import sys, torch; print(\"python\", sys.version.split()[0]); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name()); \
import triton; print(\"triton\", triton.__version__)'"
}

tests() {
    local name=$1 seconds=$2
    shift 2
    if [ "$HAS_PYTEST" = 1 ]; then
        run "$name" "$seconds" $PY -m pytest -q -rs -p no:cacheprovider "$@"
    else
        echo "pytest is not installed (put its wheels in .whl/): $name skipped"
        STATUS+=("$name: skipped, no pytest")
    fi
}

summary() {
    section "summary (${SECONDS} s)"
    printf '%s\n' "${STATUS[@]}" | tee ${OUT_DIR:+"$OUT_DIR/summary.txt"}
}

if ! $PY -c "import hydra, omegaconf, pytest" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/lstm_mt_site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/lstm_mt_site"
fi
if [ -z "${LSTM_MT_DATA_MIRROR:-}" ]; then
    for mirror in .devdata shared/data ../shared/data; do
        if [ -d "$mirror/multi30k/raw" ]; then export LSTM_MT_DATA_MIRROR="$PWD/$mirror"; break; fi
    done
fi
HAS_PYTEST=$($PY -c "import pytest" 2>/dev/null && echo 1 || echo 0)
