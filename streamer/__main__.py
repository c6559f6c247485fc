"""``python -m streamer``: run | migrate | subscribers | subscriptions | broker-files."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import orjson
import psycopg
from pydantic import ValidationError

from runtime.migrations import MigrationError, migrate
from schemas.subscriptions import ControlScope, SubscriptionRequest, SubscriptionState
from streamer import subscriptions
from streamer.service import DEFAULT_BASE_ACL, BrokerFilesSync, run
from streamer.settings import BrokerFiles, StreamerSettings
from streamer.subscriptions import UnknownSubscriptionError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="deliver the outbox and serve the API (settings from STREAM_*)")
    sub.add_parser("migrate", help="apply the storage migrations (idempotent)")

    subscribers = sub.add_parser("subscribers", help="data subscribers and their credentials")
    subscribers_sub = subscribers.add_subparsers(dest="action", required=True)
    issue = subscribers_sub.add_parser(
        "issue", help="create a subscriber or rotate its secrets; prints them once"
    )
    issue.add_argument("subscriber_id")
    scope = subscribers_sub.add_parser(
        "scope",
        help="which sessions a subscriber may limit (seed 003): those on these entities as of "
        "their start; EntityType None = every session. Without options, shows it",
    )
    scope.add_argument("subscriber_id")
    scope.add_argument(
        "--entity-type", help="ServicePoint, Meter, ESN, Transformer, Premises, Feeder or None"
    )
    scope.add_argument("--entity-id", action="append", default=[], help="repeat for a list")
    scope.add_argument("--withdraw", action="store_true", help="it may limit no session")

    subs = sub.add_parser("subscriptions", help="live EVChargingEvents subscriptions")
    subs_sub = subs.add_subparsers(dest="action", required=True)
    create = subs_sub.add_parser("create", help="subscribe (prints the subscription as JSON)")
    create.add_argument("--subscriber", required=True, help="DataSubscriberId")
    create.add_argument("--entity-type", default="None",
                        help="ServicePoint, Meter, ESN, Transformer, Premises or None")  # fmt: skip
    create.add_argument("--entity-id", action="append", default=[], help="repeat for a list")
    create.add_argument("--start-position", type=int, help="deliver outbox rows after this one")
    listing = subs_sub.add_parser("list", help="all subscriptions (or one subscriber's)")
    listing.add_argument("--subscriber")
    actions = {"show": "one subscription", "pause": "stop delivering",
               "resume": "deliver again (from now on)", "delete": "remove"}  # fmt: skip
    for name, what in actions.items():
        action = subs_sub.add_parser(name, help=what)
        action.add_argument("subscription_id")

    files = sub.add_parser(
        "broker-files", help="write Mosquitto's password file and ACL for the subscribers"
    )
    files.add_argument("--passwd", type=Path, required=True)
    files.add_argument("--acl", type=Path, required=True)
    files.add_argument("--base-passwd", type=Path, help="service and gateway users to keep")
    files.add_argument("--base-acl", type=Path, default=DEFAULT_BASE_ACL)
    return parser


def _print_json(value: object) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _subscribers(conn: psycopg.Connection[object], args: argparse.Namespace) -> int:
    if args.action == "issue":
        issued = subscriptions.issue_credentials(conn, args.subscriber_id)
        _print_json(issued.__dict__)
        return 0
    if args.withdraw and (args.entity_type or args.entity_id):
        raise ValueError("--withdraw takes no --entity-type or --entity-id")
    if args.withdraw:
        subscriptions.set_control_scope(conn, args.subscriber_id, None)
    elif args.entity_type or args.entity_id:
        granted = ControlScope(EntityType=args.entity_type or "None", EntityId=args.entity_id)
        subscriptions.set_control_scope(conn, args.subscriber_id, granted)
    scope = subscriptions.control_scope(conn, args.subscriber_id)
    _print_json({
        "DataSubscriberId": args.subscriber_id,
        "ControlScope": scope and scope.model_dump(mode="json", by_alias=True),
    })  # fmt: skip
    return 0


def _subscriptions(conn: psycopg.Connection[object], args: argparse.Namespace, prefix: str) -> int:
    if args.action == "create":
        request = SubscriptionRequest(
            EntityType=args.entity_type,
            EntityId=args.entity_id,
            StartPosition=args.start_position,
        )
        view = subscriptions.create(conn, args.subscriber, request, prefix=prefix)
        _print_json(view.model_dump(mode="json", by_alias=True))
    elif args.action == "list":
        views = subscriptions.list_views(conn, args.subscriber, prefix=prefix)
        _print_json([v.model_dump(mode="json", by_alias=True) for v in views])
    elif args.action == "show":
        view = subscriptions.get(conn, args.subscription_id, prefix=prefix)
        _print_json(view.model_dump(mode="json", by_alias=True))
    elif args.action == "delete":
        subscriptions.delete(conn, args.subscription_id)
    else:
        state = SubscriptionState.PAUSED if args.action == "pause" else SubscriptionState.ACTIVE
        view = subscriptions.set_state(conn, args.subscription_id, state, prefix=prefix)
        _print_json(view.model_dump(mode="json", by_alias=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = StreamerSettings()
    dsn = settings.database_url.get_secret_value()
    prefix = settings.mqtt.topic_prefix
    try:
        if args.command == "run":
            return run(settings)
        flavour, applied = migrate(dsn)
        if args.command == "migrate":
            print(f"{flavour.value}: applied {', '.join(applied) or 'nothing (up to date)'}")
            return 0
        with psycopg.connect(dsn) as conn:
            conn.execute("SET synchronous_commit = on")
            if args.command == "subscribers":
                return _subscribers(conn, args)
            if args.command == "subscriptions":
                return _subscriptions(conn, args, prefix)
            files = BrokerFiles(passwd=args.passwd, acl=args.acl, base_passwd=args.base_passwd,
                                base_acl=args.base_acl)  # fmt: skip
            BrokerFilesSync(files, prefix).sync(conn)
            print(f"wrote {args.passwd} and {args.acl}")
            return 0
    except ValidationError as exc:
        what = "control scope" if args.command == "subscribers" else "subscription"
        print(f"invalid {what}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except (UnknownSubscriptionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MigrationError, psycopg.Error) as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
