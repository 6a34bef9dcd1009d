"""``python -m arr_prefect.cli``: the same as the ``arr`` console script."""

from arr_prefect.cli.commands import main

main()
