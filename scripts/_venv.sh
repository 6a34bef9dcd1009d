# Sourced by the scripts: make ./.venv exist and hold this project and its pinned tools.
# Re-installs only when pyproject.toml or constraints.txt changed since the last install.
# $1: the extra to install ("dev" for the test suite, "" for running the flows). Always pass
# it, even empty: `source` without arguments hands this file the *caller's* arguments, so a
# script run as `demo --help` would otherwise ask pip for the extra "--help".
if [ "$#" -ne 1 ]; then
    echo "scripts/_venv.sh: source it with exactly one argument, the extra (\"\" for none)" >&2
    return 2
fi
_extra="$1"
case "$_extra" in
    "" | [a-z]*) ;;
    *) echo "scripts/_venv.sh: not an extra of pyproject.toml: '$_extra'" >&2; return 2 ;;
esac
_spec="."
[ -n "$_extra" ] && _spec=".[$_extra]"
_stamp=".venv/.installed${_extra:+-$_extra}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
_fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ] && [ ! constraints.txt -nt "$1" ]; }
# An install with the dev extra holds everything the plain one needs.
if ! _fresh "$_stamp" && ! { [ -z "$_extra" ] && _fresh .venv/.installed-dev; }; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -e "$_spec"
    touch "$_stamp"
fi
