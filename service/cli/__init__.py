"""The ``aelab`` command: one root over the commands that run on this machine
(:mod:`.local`: ``train``, ``serve``, ``db``, ``data``) and those that drive a server
(:mod:`.remote`: ``submit``, ``ls``, ``status``, ``results``, ``logs``, ``cancel``,
``delete``, ``download``, ``open``, ``run``, ``ready``).

A command's heavy imports happen when it runs: the remote ones need only the base install
(:mod:`service.client`) and never load torch or the web stack, ``serve`` never loads torch
and ``train`` never loads the web stack. Exit codes: :mod:`.remote`.
"""

from __future__ import annotations

import sys

import typer

from service.cli import local, remote

app = typer.Typer(help="aelab: autoencoder-compression experiments, on a server (submit, "
                  "ls, status, results, logs, cancel, download, open) or on this machine "
                  "(train, serve, db, data).", no_args_is_help=True)
app.add_typer(local.app)
app.add_typer(remote.app)


def main() -> None:  # pragma: no cover
    sys.exit(app())
