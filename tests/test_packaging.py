"""The base install is the client and the remote CLI; the server and training stacks are
extras that `make setup` and the image install."""

from __future__ import annotations

import re
import tomllib

from tests.utils import REPO

ROOT = REPO
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HEAVY = {"torch", "torchvision", "torchmetrics", "ray", "sqlalchemy", "alembic", "fastapi",
         "uvicorn", "fsspec", "pillow", "psycopg", "pandas"}


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_base_install_is_the_client_alone() -> None:
    assert names(PROJECT["dependencies"]) == {"httpx", "pydantic", "pydantic-settings",
                                              "pyyaml", "typer", "rich"}


def test_extras_hold_the_server_and_training_stacks_and_all_holds_every_one() -> None:
    extras = PROJECT["optional-dependencies"]
    assert {"fastapi", "uvicorn", "sqlalchemy", "alembic", "ray"} <= names(extras["server"])
    assert {"torch", "torchvision", "torchmetrics", "ray", "pillow"} <= names(extras["train"])
    assert extras["all"] == ["aelab[server,train,postgres,pandas,mlflow]"]
    assert "mlflow-skinny" in names(extras["mlflow"])
    assert "aelab[all]" in extras["dev"]
    every = set().union(*(names(extras[e]) for e in ("server", "train", "postgres", "pandas")))
    assert every >= HEAVY


def test_make_setup_and_the_image_install_every_extra() -> None:
    assert "pip install --quiet -e '.[dev]'" in (ROOT / "Makefile").read_text()
    assert "pip install '.[all]'" in (ROOT / "Dockerfile").read_text()
