# Sourced by scripts/setup.sh, test.sh and main_job.sh (from the checkout root): picks the Python environment mmh is
# installed into, sets PY to its python and puts its bin/ first on PATH.
#   - the active virtual environment ($VIRTUAL_ENV) or, else, the active conda environment ($CONDA_PREFIX);
#   - otherwise .venv in the checkout, created when absent with `$PYTHON -m venv` (PYTHON defaults to python3;
#     Python 3.10-3.12).
if [ -n "${VIRTUAL_ENV:-}" ]; then
  MMH_ENV=$VIRTUAL_ENV; MMH_ENV_KIND="active virtual environment"
elif [ -n "${CONDA_PREFIX:-}" ]; then
  MMH_ENV=$CONDA_PREFIX; MMH_ENV_KIND="active conda environment"
else
  MMH_ENV=$PWD/.venv; MMH_ENV_KIND="the checkout's .venv"
  if [ ! -x "$MMH_ENV/bin/python" ]; then
    base=${PYTHON:-python3}
    command -v "$base" >/dev/null 2>&1 || { echo "mmh setup: no $base found: install Python 3.10-3.12 (or set PYTHON)" >&2; exit 1; }
    "$base" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
      echo "mmh setup: $base is Python $("$base" -c 'import platform; print(platform.python_version())'); mmh needs 3.10-3.12 (set PYTHON)" >&2; exit 1; }
    "$base" -c 'import sys; sys.exit(0 if sys.version_info < (3, 13) else 1)' || \
      echo "mmh setup: warning: $base is newer than the tested Python 3.10-3.12" >&2
    echo "== mmh setup: creating $MMH_ENV ($("$base" -c 'import sys; print(sys.executable, sys.version.split()[0])'))"
    "$base" -m venv "$MMH_ENV" || { rm -rf "$MMH_ENV"
      echo "mmh setup: '$base -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
  fi
fi
PY=$MMH_ENV/bin/python
"$PY" -c 'import sys' 2>/dev/null || { echo "mmh setup: $PY ($MMH_ENV_KIND) does not run; remove or repair $MMH_ENV" >&2; exit 1; }
export PATH="$MMH_ENV/bin:$PATH"
