"""The remote CLI prints what a server sends as it is: names, errors and phases are never
rich markup, non-finite measures are their tokens, and a server's odd ``Retry-After`` is
waited out within bounds. The `aelab` commands run in-process (typer's runner) against a
scripted server; the real-server round trip is test_remote's."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import remote
from service.client import Client
from tests.service.client.test_client import experiment_json, run_json

# Rich markup, an emoji code and an unclosed style: each would be parsed (or raise
# MarkupError) were the text read as markup.
NAME = "[/] [bold]x[/bold] :smile: [red"
ERROR = "boom [/red] in [link=http://evil]here[/link]"


def results_json(**measures: Any) -> dict[str, Any]:
    row = {"run_id": 1, "model": "baseline", "dataset": "synthetic", "status": "succeeded",
           "mse": 0.0, "mae": 0.0, "psnr": 20.0, "ssim": 1.0, "lr": 0.001,
           "classifier_accuracy": 0.5, "training_time_s": 61.0, **measures}
    return {"experiment_id": 7, "columns": list(row), "rows": [row], "expect": None}


class Server:
    """Answers the CLI's GETs from a table of paths; records each sleep the client took."""

    def __init__(self, routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> None:
        self.routes = routes
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        return self.routes[f"{request.method} {request.url.path}"](request)

    def sleep(self, seconds: float) -> None:
        # What time.sleep accepts, and no more than the client's ceiling.
        assert isinstance(seconds, float | int) and math.isfinite(seconds), seconds
        assert 0 <= seconds <= 8.0, seconds
        self.sleeps.append(seconds)


def answer(body: Any, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json=body)


def aelab(*args: str, terminal: bool = False) -> Any:
    """The command in-process, its standard output a terminal (for rich) or a pipe."""
    return CliRunner().invoke(remote.app, list(args),
                              env={"TTY_COMPATIBLE": "1" if terminal else "0",
                                   "COLUMNS": "200"})


ENDED = experiment_json(status="succeeded", runs=[run_json(
    status="failed", phase=None, epoch=2, error=ERROR, finished_at="2026-01-02T03:05:05Z")])
ENDED["name"] = NAME
ENDED["finished_at"] = "2026-01-02T03:05:05Z"


def routes(**measures: Any) -> dict[str, Callable[[httpx.Request], httpx.Response]]:
    item = {k: v for k, v in ENDED.items() if k != "runs"} | {
        "runs": {"failed": 1, "total": 1}}
    return {"GET /api/v1/experiments": answer({"items": [item], "next": None}),
            "GET /api/v1/experiments/7": answer(ENDED),
            "POST /api/v1/experiments": answer(ENDED, 201),
            "GET /api/v1/experiments/7/results": lambda r: httpx.Response(
                200, content=json.dumps(results_json(**measures)),  # NaN, Infinity tokens
                headers={"content-type": "application/json"}) if r.url.params["format"] == "json"
            else httpx.Response(200, text="| markdown |\n")}


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_names_and_errors_print_literally_never_as_rich_markup(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any, terminal: bool) -> None:
    server = Server(routes())
    monkeypatch.setattr(remote, "Client", lambda url=None: Client(
        "http://aelab.test", transport=httpx.MockTransport(server), sleep=server.sleep))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": NAME, "models": ["baseline"],
                                "datasets": ["synthetic"]}))
    for args in (["ls"], ["status", "7"], ["submit", str(spec), "--wait"]):
        result = aelab(*args, terminal=terminal)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            (args, repr(result.exception))
        assert result.exit_code in (0, 1), (args, result.output)
        out = result.stdout
        if args[0] != "submit" or terminal:  # a pipe gets the API's Markdown for submit
            assert NAME in out, (args, out)
        if args[0] != "ls":
            assert ERROR in result.output, (args, result.output)


def test_non_finite_measures_print_as_their_tokens(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Any) -> None:
    """A perfect reconstruction's PSNR, a NaN LR and an infinite train time: the terminal
    results table shows the tokens the API wrote (it used to stop with a format error)."""
    server = Server(routes(psnr="Infinity", lr="NaN", training_time_s=float("inf"),
                           mse=float("nan")))
    monkeypatch.setattr(remote, "Client", lambda url=None: Client(
        "http://aelab.test", transport=httpx.MockTransport(server), sleep=server.sleep))
    result = aelab("status", "7", "--wait", terminal=True)
    # Exit 1: the experiment's run failed (not a crash: that is an exception, not an exit).
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, \
        repr(result.exception)
    row = next(line for line in result.stdout.splitlines() if "baseline" in line
               and "succeeded" in line)
    assert row.split()[4:] == ["NaN", "0.000000", "Infinity", "1.0000", "0.5000",
                               "Infinity", "NaN"], row


@pytest.mark.parametrize("retry_after", ["-1", "nan", "inf", "1e400", "99999999999",
                                         "Wed, 21 Oct 2015 07:28:00 GMT", "soon", ""])
def test_an_odd_retry_after_is_waited_out_within_bounds(monkeypatch: pytest.MonkeyPatch,
                                                         retry_after: str) -> None:
    """A 503 with a negative, non-numeric, huge or past-date ``Retry-After`` is retried
    after a wait between 0 and the client's ceiling (it used to raise ValueError)."""
    answers = iter([httpx.Response(503, json={"detail": "busy", "code": "unavailable"},
                                   headers={"Retry-After": retry_after}),
                    httpx.Response(200, json=experiment_json(status="succeeded"))])
    server = Server({"GET /api/v1/experiments/7": lambda _: next(answers)})
    monkeypatch.setattr(remote, "Client", lambda url=None: Client(
        "http://aelab.test", transport=httpx.MockTransport(server), sleep=server.sleep))
    result = aelab("status", "7")
    assert result.exit_code == 0, (result.output, repr(result.exception))
    assert len(server.sleeps) == 1
