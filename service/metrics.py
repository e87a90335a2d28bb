"""``GET /metrics``: the service in Prometheus's text format (``prometheus_client``).

One registry per app (never the process-global one), so two apps in one process (tests)
count apart. What it holds:

- ``aelab_http_requests_total{method,route,status}`` and
  ``aelab_http_request_duration_seconds{method,route}`` (a histogram): counted by
  ``service.observe.RequestIds`` under the route's template (``/api/v1/runs/{run_id}``),
  never the raw path, so ids never multiply the series;
- read at scrape time, from the database: ``aelab_runs{status}`` (every status, 0
  included), ``aelab_experiments{status}``, ``aelab_runs_in_flight`` (runs running on the
  executor: the dispatcher's ``max_in_flight`` bounds it);
- from the dispatcher: ``aelab_dispatch_ticks_total`` (passes made),
  ``aelab_runners{gpus,cpus}`` (warm runners alive by resource shape, as the last
  reconciling pass counted them; absent until then or when Ray's state API is away);
- from the webhook outbox (``service.webhooks``): ``aelab_webhook_deliveries_total`` and
  ``aelab_webhook_failures_total`` by event (attempts that got a 2xx / did not, in this
  process), and ``aelab_webhook_outbox{state}`` from the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.persistence.tables import Experiment, Run, Status

if TYPE_CHECKING:
    from service.context import ServiceContext


class ServiceMetrics:
    """The app's registry, its request metrics and the webhook counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("aelab_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("aelab_http_request_duration_seconds",
                                 "seconds from a request's arrival to its answer's end",
                                 ["method", "route"], registry=self.registry)
        self.webhook_deliveries = Counter(
            "aelab_webhook_deliveries", "webhook deliveries a receiver accepted (2xx)",
            ["event"], registry=self.registry)
        self.webhook_failures = Counter(
            "aelab_webhook_failures", "webhook delivery attempts that failed (no answer or "
            "not 2xx); each is retried with backoff until its deadline",
            ["event"], registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (``service.observe.Observer``)."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def watch(self, ctx: Callable[[], ServiceContext]) -> None:
        """Read the service's state at scrape time from ``ctx()``."""
        self.registry.register(_StateCollector(ctx))


class _StateCollector(Collector):
    def __init__(self, ctx: Callable[[], ServiceContext]) -> None:
        self.ctx = ctx

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only (the registry does not call collect early)

    def collect(self) -> Iterator[Metric]:
        from service.webhooks import outbox_counts

        ctx = self.ctx()
        with ctx.sessions() as s:
            runs = dict(s.execute(select(Run.status, func.count()).group_by(Run.status)).all())
            experiments = dict(s.execute(select(Experiment.status, func.count())
                                         .group_by(Experiment.status)).all())
            outbox = outbox_counts(s)
        for name, doc, counts in (("aelab_runs", "runs by status", runs),
                                  ("aelab_experiments", "experiments by status",
                                   experiments)):
            family = GaugeMetricFamily(name, doc, labels=["status"])
            for status in Status:
                family.add_metric([status.value], counts.get(status, 0))
            yield family
        yield GaugeMetricFamily("aelab_runs_in_flight", "runs on the executor now",
                                value=runs.get(Status.running, 0))
        family = GaugeMetricFamily("aelab_webhook_outbox", "webhook events by state",
                                   labels=["state"])
        for state, count in outbox.items():
            family.add_metric([state], count)
        yield family
        dispatcher = ctx.dispatcher
        yield CounterMetricFamily("aelab_dispatch_ticks", "dispatcher passes made",
                                  value=dispatcher.ticks if dispatcher is not None else 0)
        if dispatcher is not None and dispatcher.runner_shapes is not None:
            family = GaugeMetricFamily("aelab_runners", "warm runners alive by resource "
                                       "shape (GPUs, CPUs each)", labels=["gpus", "cpus"])
            for (gpus, cpus), count in sorted(dispatcher.runner_shapes.items()):
                family.add_metric([f"{gpus:g}", f"{cpus:g}"], count)
            yield family
