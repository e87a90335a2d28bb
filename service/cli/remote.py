"""The commands that drive a server through :mod:`service.client` (``submit``, ``ls``,
``status``, ``results``, ``logs``, ``cancel``, ``delete``, ``download``, ``open``, ``run``,
``ready``); they need only the base install.

Exit codes: 0 done (with ``--wait``: every run succeeded, or was pruned by its search,
and none REGRESSED against the spec's ``expect``), 1 a run failed, was cancelled or
REGRESSED, or the API said no (not found, conflict), 2 the request or spec was refused
(each field named as the API named it), 3 the server could not be reached (or answered
503), 130 interrupted (Ctrl-C; an experiment being followed keeps running).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from service.cli.progress import (
    LiveFollower,
    PlainFollower,
    elapsed_s,
    format_duration,
    format_number,
    results_table,
    run_label,
    run_state,
)
from service.client import (
    AelabError,
    ApiError,
    Client,
    InvalidRequest,
    NotFoundError,
    ServiceUnavailable,
    SpecError,
    Unreachable,
    field_path,
)
from service.client.schemas import ExperimentOut, ResultFormat, RunSummary
from service.client.states import Status
from workers.text import strip_ansi

app = typer.Typer()
REMOTE = "On a server ($AELAB_URL, token $AELAB_API_TOKEN)"
EXIT_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 1, 2, 3, 130

UrlOption = Annotated[str | None, typer.Option(
    "--url", show_default=False,
    help="the aelab server [default: $AELAB_URL, else http://127.0.0.1:8000]")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON (for scripts)")]
PollOption = Annotated[float, typer.Option(help="seconds between polls while waiting",
                                           min=0.1)]


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _console() -> Console:
    """Standard output as rich sees it: colour and live redraws only on a terminal; in a
    pipe or a file plain text, lines never wrapped or cut at 80 columns. Text is always
    literal: what we print holds names, errors and phases the server sent, so rich's
    markup (``[bold]``, ``[/]``) and emoji codes (``:x:``) are off; style goes through
    ``style=`` and :class:`~rich.text.Text`."""
    literal: dict[str, Any] = {"highlight": False, "soft_wrap": True, "markup": False,
                               "emoji": False}
    console = Console(**literal)
    return console if console.is_terminal else Console(**literal, width=1000)


def _client(url: str | None) -> Client:
    try:
        return Client(url)
    except ValueError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_REFUSED) from exc


def _command(url: str | None, *args: object) -> str:
    """An ``aelab`` command line to show the user (with ``--url`` when one was given)."""
    parts = ["aelab", *(str(a) for a in args)] + (["--url", url] if url else [])
    return " ".join(shlex.quote(p) for p in parts)


@contextlib.contextmanager
def _remote(refused: str = "the server refused the request", as_json: bool = False
            ) -> Iterator[None]:
    """Map the client's errors to messages on stderr and the exit codes above; with
    ``as_json`` (a command's ``--json``) also one JSON object on stdout, ``{"error": {
    "message", "exit_code", "status", "fields"}}``, so a script always has JSON to parse."""
    def fail(code: int, message: str, exc: BaseException | None,
             status: int | None = None, fields: list[dict[str, Any]] | None = None) -> None:
        if as_json:
            typer.echo(json.dumps({"error": {"message": message, "exit_code": code,
                                             "status": status, "fields": fields or []}}))
        raise typer.Exit(code) from exc

    try:
        yield
    except KeyboardInterrupt:
        _err("interrupted")
        fail(EXIT_INTERRUPTED, "interrupted", None)
    except (Unreachable, ServiceUnavailable) as exc:
        _err(f"error: {exc}")
        fail(EXIT_UNREACHABLE, str(exc), exc,
             status=exc.status_code if isinstance(exc, ApiError) else None)
    except InvalidRequest as exc:
        _err(f"error: {refused} (HTTP 422):")
        for e in exc.errors:
            _err(f"  {field_path(e)}: {e.msg} [{e.type}]")
        fail(EXIT_REFUSED, refused, exc, status=422,
             fields=[{"field": field_path(e), "msg": e.msg, "type": e.type}
                     for e in exc.errors])
    except SpecError as exc:
        _err(f"error: {exc}")
        fail(EXIT_REFUSED, str(exc), exc)
    except ApiError as exc:
        _err(f"error: {exc.detail}" + (f" (HTTP {exc.status_code}"
                                       + (f", request id {exc.request_id})"
                                          if exc.request_id else ")")))
        fail(EXIT_FAILED, str(exc.detail), exc, status=exc.status_code)
    except AelabError as exc:
        _err(f"error: {exc}")
        fail(EXIT_FAILED, str(exc), exc)


def _print_json(data: Any) -> None:
    # Through pydantic's JSON, which writes non-finite numbers as the API does ("NaN").
    if isinstance(data, BaseModel):
        data = json.loads(data.model_dump_json())
    elif isinstance(data, list):
        data = [json.loads(d.model_dump_json()) if isinstance(d, BaseModel) else d
                for d in data]
    typer.echo(json.dumps(data, indent=2))


# How a run may end for ``--wait`` to exit 0: succeeded, or stopped by its search's pruner
# (an ordinary end of a weak sample, not a failure).
ENDED_WELL = (Status.succeeded, Status.pruned)


def _all_succeeded(experiment: ExperimentOut) -> bool:
    """Whether the experiment succeeded with every run succeeded or pruned."""
    return experiment.status == Status.succeeded and \
        all(r.status in ENDED_WELL for r in experiment.runs)


def _planned(experiment: ExperimentOut) -> int:
    """The runs the experiment makes: its grid's, or every sample of its search (a search
    proposes its samples as slots free, so its rows are fewer until the end)."""
    if experiment.search is not None:
        return int(experiment.search["planned"])
    return len(experiment.runs)


@contextlib.contextmanager
def _interrupt_between_polls(client: Client) -> Iterator[None]:
    """Ctrl-C while following raises KeyboardInterrupt only between polls (in the
    client's sleep), never inside the live display's locks, where it could leave them
    held and hang the exit; a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    def sleep(seconds: float) -> None:
        if pressed.wait(seconds):
            raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    previous_sleep = client._sleep
    client._sleep = sleep
    try:
        yield
    finally:
        client._sleep = previous_sleep
        signal.signal(signal.SIGINT, previous_handler)


def _follow_until_ended(client: Client, experiment: ExperimentOut, console: Console, *,
                        as_json: bool, poll_s: float) -> ExperimentOut:
    if as_json:
        return client.wait(experiment.id, poll_s=poll_s)
    name = f' "{experiment.name}"' if experiment.name else ""
    header = f"experiment {experiment.id}{name}: {_planned(experiment)} run(s) on " \
             f"{client.url} (Ctrl-C stops following; the experiment keeps running)"
    follower: LiveFollower | PlainFollower
    if console.is_terminal:
        console.print(header, style="bold")
        follower = LiveFollower(console)
    else:
        _err(header)
        follower = PlainFollower(_err)
    with follower:
        return client.wait(experiment.id, poll_s=poll_s, on_change=follower.update)


def _follow(client: Client, experiment: ExperimentOut, url: str | None, *, as_json: bool,
            poll_s: float) -> int:
    """Follow an experiment to its end: live bars on a terminal (plain lines on stderr
    otherwise), then the results table. Returns the exit code; Ctrl-C returns 130 and
    leaves the experiment running."""
    console = _console()
    exp_id = experiment.id
    try:
        with _interrupt_between_polls(client):
            final = _follow_until_ended(client, experiment, console, as_json=as_json,
                                        poll_s=poll_s)
    except KeyboardInterrupt:
        _err(f"\nStopped following experiment {exp_id}: it keeps running on the server.")
        _err(f"Follow it again: {_command(url, 'status', exp_id, '--wait')}")
        _err(f"Cancel it:       {_command(url, 'cancel', exp_id)}")
        return EXIT_INTERRUPTED
    if as_json:
        _print_json(final)
        return 0 if _all_succeeded(final) and not _regressed(client, final) else EXIT_FAILED
    _print_outcome(client, final, console)
    for run in final.runs:
        if run.status not in ENDED_WELL:
            _err(f"{run_label(run)} {run.status.value}" + (f": {run.error}" if run.error else ""))
    if _regressed(client, final):
        _err(f"experiment {final.id} REGRESSED: a run breaks the spec's expect bounds "
             "(the results' Expect column has the numbers)")
        return EXIT_FAILED
    return 0 if _all_succeeded(final) else EXIT_FAILED


def _regressed(client: Client, final: ExperimentOut) -> bool:
    """Whether a run of the experiment breaks the bounds of the spec's ``expect``."""
    return client.results_table(final.id).expect == "REGRESSED"


def _print_outcome(client: Client, final: ExperimentOut, console: Console) -> None:
    """The results table (rich on a terminal, the API's Markdown in a pipe) and a summary
    line (on stderr in a pipe, so standard output is the table alone)."""
    done = sum(r.status == Status.succeeded for r in final.runs)
    pruned = sum(r.status == Status.pruned for r in final.runs)
    took = (final.finished_at - final.started_at).total_seconds() \
        if final.finished_at and final.started_at else None
    summary = f"experiment {final.id} {final.status.value}: {done}/{_planned(final)} run(s) " \
              f"succeeded{f', {pruned} pruned' if pruned else ''} in {format_duration(took)}"
    if console.is_terminal:
        console.print(results_table(client.results_table(final.id), title=final.name,
                                    width=console.width))
        console.print(summary, style="green" if _all_succeeded(final) else "red")
    else:
        _write(client.results_text(final.id, "markdown"))
        _err(summary)


def _write(text: str) -> None:
    """Text to standard output exactly as given (UTF-8), ending with a newline."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(text.encode("utf-8"))
    if not text.endswith("\n"):
        out.write(b"\n")
    out.flush()


@app.command(rich_help_panel=REMOTE)
def submit(
    spec: Annotated[str, typer.Argument(help="a JSON or YAML spec file (- reads stdin)",
                                        show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="validate and estimate only; nothing is stored")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="follow the runs live, print the results table, exit 0 only when "
        "every run succeeded (or was pruned by its search)")] = False,
    idempotency_key: Annotated[str | None, typer.Option(
        help="resubmitting with the same key returns the same experiment [default: a new "
        "one]", show_default=False)] = None,
    poll: PollOption = 1.0,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit an experiment spec to the server (the API validates it: a refused field
    exits 2, named as the API names it)."""
    with _remote(as_json=as_json, refused="the spec was refused"):
        client = _client(url)
        if dry_run:
            plan = client.submit(spec, dry_run=True, idempotency_key=idempotency_key)
            if as_json:
                _print_json(plan)
                return
            runs = ", ".join(f"{r['model']}/{r['dataset']}" for r in plan.runs)
            count = f"{len(plan.runs)} run(s)" if plan.search is None else \
                f"{plan.search['runs']} run(s) ({plan.search['num_samples']} samples × " \
                f"{len(plan.runs)} (model, dataset))"
            typer.echo(f"valid: {count}: {runs}")
            typer.echo("estimate: " + ", ".join(f"{k} {v}" for k, v in plan.estimate.items()))
            for item in plan.missing:
                typer.echo(f"missing on the server host: {item['kind']} {item['name']} "
                           f"({item['purpose']}): put {', '.join(item['files'])} in "
                           f"{item['folder']}")
            return
        experiment = client.submit(spec, idempotency_key=idempotency_key)
        if wait:
            raise typer.Exit(_follow(client, experiment, url, as_json=as_json, poll_s=poll))
        if as_json:
            _print_json(experiment)
            return
        typer.echo(f"experiment {experiment.id} submitted: {_planned(experiment)} run(s) "
                   f"{experiment.status.value}")
        typer.echo(f"follow it: {_command(url, 'status', experiment.id, '--wait')}")


@app.command("ls", rich_help_panel=REMOTE)
def list_experiments(
    status: Annotated[Status | None, typer.Option(help="only experiments in this state",
                                                  show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first (0: all)",
                                       min=0)] = 20,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List experiments, newest first."""
    with _remote(as_json=as_json):
        items = list(_client(url).list(status=status, limit=limit or None))
    if as_json:
        _print_json(items)
        return
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("id", "name", "status", "runs ok/total", "created"):
        table.add_column(name)
    for item in items:
        created = item.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        table.add_row(str(item.id), item.name, item.status.value,
                      f"{item.runs.get('succeeded', 0)}/{item.runs.get('total', 0)}", created)
    _console().print(table)


def _runs_table(runs: list[RunSummary]) -> Any:
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("run", "model", "dataset", "state", "epoch", "elapsed", "lr", "attempt",
                 "error"):
        table.add_column(name)
    for r in runs:
        table.add_row(str(r.id), r.model, r.dataset, run_state(r),
                      f"{r.epoch}/{r.epochs_total}", format_duration(elapsed_s(r)),
                      "" if r.lr is None else format_number(r.lr, ".3g"), str(r.attempt),
                      r.error or "")
    return table


@app.command(rich_help_panel=REMOTE)
def status(
    experiment_id: Annotated[int, typer.Argument(help="experiment id", show_default=False)],
    wait: Annotated[bool, typer.Option(
        "--wait", help="follow it live until it ends (exit codes as submit --wait)")] = False,
    poll: PollOption = 1.0,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """An experiment's status and its runs (phase, epoch, errors)."""
    with _remote(as_json=as_json):
        client = _client(url)
        experiment = client.get(experiment_id)
        if wait:
            raise typer.Exit(_follow(client, experiment, url, as_json=as_json, poll_s=poll))
    if as_json:
        _print_json(experiment)
        return
    console = _console()
    name = f' "{experiment.name}"' if experiment.name else ""
    console.print(f"experiment {experiment.id}{name}: {experiment.status.value}"
                  + (f": {experiment.error}" if experiment.error else ""))
    if experiment.search is not None:
        console.print(f"search: {len(experiment.runs)}/{_planned(experiment)} run(s) made "
                      "(samples are proposed as slots free)")
    console.print(_runs_table(experiment.runs))
    if "ray_dashboard" in experiment.links:
        console.print(f"Ray dashboard: {experiment.links['ray_dashboard']}")


@app.command(rich_help_panel=REMOTE)
def results(
    experiment_id: Annotated[int, typer.Argument(help="experiment id", show_default=False)],
    format: Annotated[ResultFormat, typer.Option(
        "--format", "-f", help="as the API renders it")] = "markdown",
    by_seed: Annotated[bool, typer.Option(
        "--by-seed", help="one row per (model, dataset, latent size): mean ± std over its "
        "seeds (the API's aggregate=seed)")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """The study's results table, exactly as the API renders it (--json: --format json)."""
    fmt: ResultFormat = "json" if as_json else format
    with _remote(as_json=as_json):
        _write(_client(url).results_text(experiment_id, fmt,  # type: ignore[arg-type]
                                         aggregate="seed" if by_seed else None))


@app.command(rich_help_panel=REMOTE)
def logs(
    run_id: Annotated[int, typer.Argument(help="run id", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="keep printing until the run ends")] = False,
    offset: Annotated[int, typer.Option(help="characters to skip", min=0)] = 0,
    poll: PollOption = 1.0,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """A run's driver log (what its Ray job printed; colour codes dropped unless on a
    terminal); --json: the API's answer, one JSON object per line with --follow."""
    plain = not sys.stdout.isatty()
    with _remote(as_json=as_json):
        client = _client(url)
        chunks = client.follow_logs(run_id, offset=offset, poll_s=poll) if follow \
            else iter([client.logs(run_id, offset)])
        for chunk in chunks:
            if as_json:
                typer.echo(chunk.model_dump_json())
            else:
                sys.stdout.write(strip_ansi(chunk.text) if plain else chunk.text)
                sys.stdout.flush()


@app.command(rich_help_panel=REMOTE)
def cancel(
    experiment_id: Annotated[int, typer.Argument(help="experiment id", show_default=False)],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a queued or running experiment: its Ray jobs are stopped."""
    with _remote(as_json=as_json):
        experiment = _client(url).cancel(experiment_id)
    if as_json:
        _print_json(experiment)
        return
    stopped = sum(r.status == Status.cancelled for r in experiment.runs)
    typer.echo(f"experiment {experiment.id} {experiment.status.value}: {stopped} of "
               f"{len(experiment.runs)} run(s) cancelled")


@app.command(rich_help_panel=REMOTE)
def delete(
    experiment_id: Annotated[int, typer.Argument(help="experiment id", show_default=False)],
    url: UrlOption = None,
) -> None:
    """Delete a finished experiment with its runs' artifacts and checkpoints."""
    with _remote():
        _client(url).delete(experiment_id)
    typer.echo(f"experiment {experiment_id} deleted")


@app.command(rich_help_panel=REMOTE)
def download(
    run_id: Annotated[int, typer.Argument(help="run id", show_default=False)],
    name: Annotated[str | None, typer.Argument(
        help="artifact name (samples.png, model.pt, job.log, …) [default: all of them]",
        show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder to write into",
                                         file_okay=False)] = Path("."),
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download a run's artifacts, streamed to disk and checked against the sha256 the
    API lists (a mismatch keeps nothing and exits 1)."""
    written = []
    with _remote(as_json=as_json):
        client = _client(url)
        run = client.run(run_id)
        artifacts = [a for a in run.artifacts if name is None or a.name == name]
        if not artifacts:
            names = ", ".join(a.name for a in run.artifacts) or "none yet"
            raise NotFoundError(404, f"run {run_id} ({run.status.value}) has no artifact"
                                     + (f" {name!r}" if name else "s")
                                     + f"; it has: {names}", [])
        output.mkdir(parents=True, exist_ok=True)
        for artifact in artifacts:
            path = client.download_artifact(artifact, output)
            written.append({"name": artifact.name, "path": str(path), "size": artifact.size,
                            "sha256": artifact.checksum})
            if not as_json:
                typer.echo(f"{path}  {artifact.size} bytes  sha256 {artifact.checksum}")
    if as_json:
        _print_json(written)


@app.command("open", rich_help_panel=REMOTE)
def open_experiment(
    experiment_id: Annotated[int, typer.Argument(help="experiment id", show_default=False)],
    print_only: Annotated[bool, typer.Option(
        "--print", help="print the address only (the default when not on a terminal)")
    ] = False,
    url: UrlOption = None,
) -> None:
    """The experiment's page in the web UI: printed, and opened in a browser when run on
    a terminal."""
    with _remote():
        client = _client(url)
        client.get(experiment_id)  # an unknown id exits 1 rather than opening a 404
    link = client.ui_url(experiment_id)
    typer.echo(link)
    if not print_only and sys.stdout.isatty():
        import webbrowser

        webbrowser.open(link)


@app.command("run", rich_help_panel=REMOTE)
def run_info(
    run_id: Annotated[int, typer.Argument(help="run id", show_default=False)],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """One run: its LR, epochs, measures and artifacts."""
    with _remote(as_json=as_json):
        run = _client(url).run(run_id)
    if as_json:
        _print_json(run)
        return
    console = _console()
    console.print(f"run {run.id} {run.model}/{run.dataset} of experiment {run.experiment_id}"
                  f": {run.status.value}" + (f": {run.error}" if run.error else "")
                  + (f", lr {format_number(run.lr, '.3g')}" if run.lr is not None else "")
                  + f", attempt {run.attempt}")
    if run.lr_trials:
        console.print(f"LR search: {len(run.lr_trials)} trial(s) "
                      f"({run.lr_trials[0].method})")
    if run.epochs:
        table = Table(box=box.SIMPLE_HEAD, title="epochs", title_justify="left")
        for col in ("epoch", "phase", "size", "lr", "train loss", "val loss", "seconds"):
            table.add_column(col, justify="right")
        for e in run.epochs:
            table.add_row(str(e.epoch), e.phase, str(e.size), format_number(e.lr, ".3g"),
                          format_number(e.train_loss, ".6f"), format_number(e.val_loss, ".6f"),
                          format_number(e.seconds, ".1f"))
        console.print(table)
    if run.measures:
        console.print("measures: " + ", ".join(
            f"{k} {format_number(v, '.6g')}" if isinstance(v, float) else f"{k} {v}"
            for k, v in run.measures.model_dump().items() if v is not None))
    for a in run.artifacts:
        console.print(f"artifact {a.name}: {a.size} bytes, sha256 {a.checksum} "
                      f"({_command(url, 'download', run.id, a.name)})")


@app.command(rich_help_panel=REMOTE)
def ready(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Whether the server's database and Ray cluster answer: exit 0 ready, 1 not ready,
    3 the server itself cannot be reached."""
    with _remote(as_json=as_json):
        readiness = _client(url).ready()
    if as_json:
        _print_json(readiness)
    else:
        for check, state in readiness.checks.items():
            typer.echo(f"{check}: {state}")
        typer.echo("ready" if readiness.ready else "not ready")
    if not readiness.ready:
        raise typer.Exit(EXIT_FAILED)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":
    app()
