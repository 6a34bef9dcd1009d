"""``python -m arr_prefect.cli``: the same as the ``arr`` console script."""

from arr_prefect.cli.app import main

main()
