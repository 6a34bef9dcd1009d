# Sourced by the scripts: make ./.venv exist and hold this project and its pinned tools.
# Re-installs only when pyproject.toml or constraints.txt changed since the last install.
# $1: the extra to install ("dev" for the test suite, empty for running the flows).
_extra="${1:-}"
_spec="."
[ -n "$_extra" ] && _spec=".[$_extra]"
_stamp=".venv/.installed${_extra:+-$_extra}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ ! -f "$_stamp" ] || [ pyproject.toml -nt "$_stamp" ] || [ constraints.txt -nt "$_stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -e "$_spec"
    touch "$_stamp"
fi
