"""``python -m service.cli``: the ``aelab`` command."""

from service.cli import app

app()
