# Sourced by the scripts: make a virtual environment exist and hold this project and its
# pinned tools. Re-installs only when pyproject.toml or the constraints changed since the
# last install.
# $1: the extra to install ("dev" for the test suite, "" for running the flows). Always pass
# it, even empty: `source` without arguments hands this file the *caller's* arguments, so a
# script run as `demo --help` would otherwise ask pip for the extra "--help".
# $2 (optional): which Prefect. "newest" (the default): ./.venv with constraints.txt, the
# newest Prefect the package is tested on. "floor": ./.venv-floor with
# constraints-floor.txt, the oldest Prefect pyproject.toml allows.
if [ "$#" -ne 1 ] && [ "$#" -ne 2 ]; then
    echo "scripts/_venv.sh: source it with the extra (\"\" for none) and optionally newest|floor" >&2
    return 2
fi
_extra="$1"
case "$_extra" in
    "" | [a-z]*) ;;
    *) echo "scripts/_venv.sh: not an extra of pyproject.toml: '$_extra'" >&2; return 2 ;;
esac
case "${2:-newest}" in
    newest) _venv=.venv; _constraints=constraints.txt ;;
    floor) _venv=.venv-floor; _constraints=constraints-floor.txt ;;
    *) echo "scripts/_venv.sh: which Prefect: newest or floor, not '$2'" >&2; return 2 ;;
esac
_spec="."
[ -n "$_extra" ] && _spec=".[$_extra]"
_stamp="$_venv/.installed${_extra:+-$_extra}"
if [ ! -x "$_venv/bin/python" ]; then
    python3 -m venv "$_venv"
fi
_fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ] && [ ! "$_constraints" -nt "$1" ]; }
# An install with the dev extra holds everything the plain one needs.
if ! _fresh "$_stamp" && ! { [ -z "$_extra" ] && _fresh "$_venv/.installed-dev"; }; then
    "$_venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # PYTHONWARNINGS: setuptools warns at every editable install that folders named like
    # the package may shadow it; here they are the package (arr_prefect/ is the source).
    PYTHONWARNINGS=ignore "$_venv/bin/python" -m pip install --quiet \
        --disable-pip-version-check -c "$_constraints" -e "$_spec"
    touch "$_stamp"
fi
