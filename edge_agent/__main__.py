"""``python -m edge_agent detect|run``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from edge_agent.detector import DetectorConfig, threshold_pairs
from edge_agent.offline import InputError, detect, dumps, read_file, session_record
from edge_agent.service import run
from edge_agent.settings import EdgeSettings, SourceKind


def _detect(args: argparse.Namespace) -> int:
    tz = ZoneInfo(args.timezone) if args.timezone else None
    out = sys.stdout.buffer
    config = args.detector
    try:
        for ended in detect(
            read_file(Path(args.input), tz), config, charging_power_w=args.charging_power
        ):
            out.write(dumps(session_record(ended, config.version)) + b"\n")
    except InputError as exc:
        print(f"edge_agent detect: {args.input}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
    return 0


def _ev_power(text: str) -> float:
    config = DetectorConfig()
    try:
        watts = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of watts") from None
    if not config.min_ev_power_w <= watts <= config.max_ev_power_w:
        raise argparse.ArgumentTypeError(
            f"{watts:g} W is not an EV's charging power ({config.min_ev_power_w:g}-"
            f"{config.max_ev_power_w:g} W; kW given as W?)"
        )
    return watts


def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.input:
        overrides.update(source=SourceKind.FILE, input=Path(args.input))
    if args.speed is not None:
        overrides["speed"] = args.speed
    if args.history:
        overrides["history"] = Path(args.history)
    settings = EdgeSettings(**overrides)  # type: ignore[arg-type]
    return run(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_agent")
    sub = parser.add_subparsers(dest="command", required=True)
    p_detect = sub.add_parser("detect", help="detect sessions in a historical file")
    p_detect.add_argument(
        "--input", required=True, help="CSV timestamp,power_w,energy_wh or Pleevi JSON Lines"
    )
    p_detect.add_argument("--timezone", help="IANA zone assumed for timestamps without an offset")
    p_detect.add_argument(
        "--charging-power",
        type=_ev_power,
        metavar="W",
        help="the power (W) the EV draws, measured on a past charge, used instead of the one "
        "learnt from the file (not a charger's nameplate: a car may draw less; in a file of "
        "many meters, every meter's)",
    )
    p_detect.add_argument(
        "--detector",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a detector threshold (a DetectorConfig field, e.g. confirm_s=2400) in place of its "
        "default, repeatable; the sessions' detectorVersion names the thresholds changed",
    )
    p_detect.set_defaults(func=_detect)
    p_run = sub.add_parser("run", help="run the agent (settings from EDGE_* environment variables)")
    p_run.add_argument("--input", help="replay this file instead of the configured source")
    p_run.add_argument("--speed", type=float, help="replay speed x real time (0 = max)")
    p_run.add_argument(
        "--history", help="the meters' past readings, to know their houses from (EDGE_HISTORY)"
    )
    p_run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    if args.command == "detect":
        try:
            args.detector = DetectorConfig.tuned(threshold_pairs(args.detector))
        except ValueError as exc:
            parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
