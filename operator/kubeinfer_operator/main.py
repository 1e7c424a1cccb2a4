"""`kubeinfer-operator`: run the kopf operator for one or more namespaces or the whole cluster."""

from __future__ import annotations

import argparse
import logging

import kopf

from kubeinfer_operator.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeinfer-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeatable); default: $KUBEINFER_NAMESPACES or all")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--liveness", metavar="URL", default=None,
                        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # kopf logs every handled pod and ConfigMap event at INFO: at 1,000 jobs that is the hot path.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = [] if args.all_namespaces else (args.namespace or list(settings.namespaces))
    import kubeinfer_operator.handlers  # registers the handlers

    if settings.kueue:
        import kubeinfer_operator.kueue_handlers  # noqa: F401  (watches Kueue Workloads)

    kopf.run(clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=args.liveness, standalone=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
