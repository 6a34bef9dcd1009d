"""The emulator's routes, one module per family: each exports ``ROUTES``, its named routes.

- :mod:`~arr_prefect.emulator.routes.sts`: the token service.
- :mod:`~arr_prefect.emulator.routes.v1`: the seed's session API.
- :mod:`~arr_prefect.emulator.routes.v2021`: the 2021-01-01 session API.
- :mod:`~arr_prefect.emulator.routes.admin`: ``/_emulator/``, for tests and operators.
"""
