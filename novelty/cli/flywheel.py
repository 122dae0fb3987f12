"""``novelty flywheel run --config flywheel.toml``: one turn of the flywheel as far as it goes without a human
(``--retry`` a failed stage, ``--abort`` the turn, ``--skip-stage STAGE`` where that is safe);
``novelty flywheel status --config …``: the turns so far, their labels, compute and cost, the last error and
the command to run next."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from novelty.cli.common import UsageError
from novelty.flywheel import turn
from novelty.flywheel.turn import (
    FlywheelConfigError,
    TurnActionError,
    abort_turn,
    load_config,
    next_step,
    run_turn,
    turn_history,
)

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("flywheel",)

#: exit code of ``flywheel run`` when the turn waits for labels from people (not an error: run again later)
EXIT_WAITING = 4


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "flywheel",
        help="run the data flywheel: select → label → retrain → compare → promote",
        description="Drive the flywheel from a config file. `run` advances the current turn as far as it can "
        "without a human and exits; a cron job or an orchestrator runs it again until the turn is done.",
        epilog=epilog,
        formatter_class=fmt,
    )
    verbs = p.add_subparsers(dest="flywheel_command", metavar="ACTION")
    r = verbs.add_parser(
        "run",
        help="advance the current turn (or start the next one)",
        description=(turn.__doc__ or "").split("The config (TOML")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 the turn is finished (promoted, rejected or aborted), 4 it waits for labels from "
        "people, 1 an error (recorded in turn.json; `novelty flywheel status` shows it and what to run next), "
        "2 bad arguments or a --retry/--abort/--skip-stage that does not apply. The config format: "
        "`python -c 'import novelty.flywheel.turn as t; print(t.__doc__)'` or the README.",
    )
    r.add_argument("--config", required=True, metavar="TOML", help="the flywheel config (see the README)")
    r.add_argument(
        "--no-new-turn",
        action="store_true",
        help="only advance an unfinished turn; do not start a new one when the last is finished",
    )
    r.add_argument("--json", action="store_true", help="print the turn's state as JSON on stdout")
    way = r.add_mutually_exclusive_group()
    way.add_argument(
        "--retry",
        action="store_true",
        help="run the stage that failed again, from its start (what it left half-done is cleared)",
    )
    way.add_argument(
        "--abort",
        action="store_true",
        help="end the current turn where it stands (recorded as aborted); the next run starts a new turn",
    )
    way.add_argument(
        "--skip-stage",
        metavar="STAGE",
        choices=tuple(dict.fromkeys(turn.ACTIONS.values())),
        help="go on without the turn's next stage where that is safe: import (do not wait for the people's "
        "labels; only those accepted from the model are imported) or promote (end the turn rejected, the "
        "champion stays); the others are refused with the reason",
    )
    r.add_argument("--reason", default="", help="with --abort: why, kept in turn.json and turns.jsonl")
    s = verbs.add_parser("status", help="the turns so far: stage, labels bought, compute, cost")
    s.add_argument("--config", required=True, metavar="TOML")
    s.add_argument("--json", action="store_true", help="as JSON lines")


def run(args: argparse.Namespace) -> int:
    if args.flywheel_command is None:
        raise UsageError("give an action: run or status (see novelty flywheel --help)")
    try:
        config = load_config(args.config)
    except FlywheelConfigError as e:
        raise UsageError(str(e)) from None
    if args.flywheel_command == "status":
        turns = turn_history(config)
        if args.json:
            for t in turns:
                print(json.dumps({**t.to_json(), "cost": t.cost(config)}))
            return 0
        if not turns:
            print(f"no turn yet in {config.workdir}; {next_step(config, None)}")
            return 0
        print(
            f"{'turn':>4}  {'stage':<19} {'champ':>5} {'chall':>5} {'sel':>4} {'human':>5} {'auto':>4}  "
            f"{'compute':>8}  cost"
        )
        for t in turns:
            c = t.cost(config)
            print(
                f"{t.number:>4}  {t.stage:<19} {t.champion or '-':>5} {t.challenger or '-':>5} {t.selected:>4} "
                f"{t.labels_bought:>5} {t.auto_accepted:>4}  {c['compute_s']:>7.1f}s  "
                f"{c['total_cost']:.2f} {c['currency']}"
            )
        last = turns[-1]
        print(f"turn {last.number}: {next_step(config, last)}")
        return 0

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.reason and not args.abort:
        raise UsageError("--reason goes with --abort")
    try:
        if args.abort:
            t = abort_turn(config, reason=args.reason, say=say)
        else:
            t = run_turn(
                config, say=say, new_turn=not args.no_new_turn, retry=args.retry, skip_stage=args.skip_stage
            )
    except TurnActionError as e:
        raise UsageError(str(e)) from None
    except Exception:
        failed = turn_history(config)
        if failed and failed[-1].error is not None:
            print(f"turn {failed[-1].number}: {next_step(config, failed[-1])}", file=sys.stderr)
        raise
    if args.json:
        print(json.dumps({**t.to_json(), "cost": t.cost(config)}, indent=2))
    else:
        c = t.cost(config)
        print(
            f"turn {t.number}: {t.stage}; labels bought {c['labels_bought']}, accepted from the model "
            f"{c['auto_accepted']}, compute {c['compute_s']:.1f} s, cost {c['total_cost']:.2f} {c['currency']}"
        )
    return 0 if t.done else EXIT_WAITING
