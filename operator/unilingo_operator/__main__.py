"""``python -m unilingo_operator`` (``make operator``): run the operator in the foreground.

The equivalent of ``kopf run --all-namespaces --liveness=http://0.0.0.0:8081/healthz`` with our
handlers, settings and login. Options override the environment (see ``config``)::

    python -m unilingo_operator                      # all namespaces, KUBECONFIG or .run/kubeconfig
    python -m unilingo_operator -n team-a -n team-b  # only these namespaces (WATCH_NAMESPACE)
    python -m unilingo_operator --standalone         # no peering (a single replica)
    python -m unilingo_operator --peering default    # peering mandatory (replicas > 1)

Two replicas never both write: with peering on, every replica keeps a keep-alive in a
``ClusterKopfPeering`` (or ``KopfPeering`` per namespace) and pauses while a live peer of
higher priority exists; by default a replica's priority falls with its start time, so the
first one started stays active and the others stand by until its record expires
(``OPERATOR_PEERING_LIFETIME``) or it exits (it then removes its record at once).

SIGTERM and Ctrl-C stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf

from unilingo_operator import handlers
from unilingo_operator.config import OperatorConfig

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def parse(argv: list[str] | None = None) -> OperatorConfig:
    config = OperatorConfig()
    parser = argparse.ArgumentParser(prog="python -m unilingo_operator", description=__doc__.splitlines()[0])
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="a namespace to handle (repeatable; default: WATCH_NAMESPACE, else all)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="handle every namespace")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", default=None, help="no peering")
    peering.add_argument("--peering", metavar="NAME", help="mandatory peering through this object")
    parser.add_argument("--priority", type=int, help="peering priority (default: by start time)")
    parser.add_argument("--liveness-port", type=int, help="port of /healthz (0: none)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    if args.namespace:
        config.namespaces = args.namespace
    if args.all_namespaces:
        config.namespaces = []
    if args.standalone:
        config.standalone = True
    if args.peering:
        config.peering_name, config.standalone = args.peering, False
    if args.priority is not None:
        config.priority = args.priority
    if args.liveness_port is not None:
        config.health_port = args.liveness_port
    config.verbose = args.verbose
    return config


class _RoutineFilter(logging.Filter):
    """Drop kopf's "succeeded" line for every repair tick and health probe (every few seconds)."""

    ROUTINE = ("Timer 'repair' succeeded", "Activity 'redis' succeeded")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.getMessage().startswith(self.ROUTINE))


def quiet_routine_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RoutineFilter())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    config = parse(argv)
    kubeconfig = config.resolve_kubeconfig()
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's login reads it from there
    elif not (os.path.exists(SERVICE_ACCOUNT_TOKEN) or os.path.exists(os.path.expanduser("~/.kube/config"))):
        sys.exit(
            "unilingo_operator: no cluster to talk to: set KUBECONFIG, run `make cluster` (it writes "
            ".run/kubeconfig), or run in a pod with a service account"
        )
    kopf.configure(verbose=config.verbose, log_prefix=True)
    quiet_routine_logs()

    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    settings = kopf.OperatorSettings()
    handlers.configure(settings, config)
    if config.pod_id:
        settings.posting.reporting_instance = config.pod_id

    kopf.run(
        registry=registry,
        settings=settings,
        clusterwide=config.clusterwide,
        namespaces=config.namespaces,
        standalone=config.standalone or None,
        peering_name=config.peering_name,
        priority=config.priority,
        liveness_endpoint=config.liveness_endpoint,
    )


if __name__ == "__main__":
    main()
