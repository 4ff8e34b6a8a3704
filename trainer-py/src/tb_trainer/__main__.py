"""`python -m tb_trainer` / `tb-train`: read job.json, train, exit with a meaningful code.

Exit status: 0 training ended on its own terms (max_epochs, early_stopping,
target_reached, time_limit) · 1 it failed · 2 the configuration is invalid,
nothing was trained · 128+N interrupted by signal N (143 SIGTERM, 130 SIGINT).

With `--evaluate CKPT` it trains nothing: it scores the checkpoint on the
job's test split and writes `evaluation.json` into the output directory
(exit 0; 1 it failed; 2 the checkpoint does not fit the job's model, or the
data has no test split).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tb-train", description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, help="job file (default: $TB_OUT/job.json)")
    parser.add_argument("--out", type=Path, help="output directory (default: $TB_OUT or /out)")
    parser.add_argument("--check", action="store_true", help="validate the job file and exit")
    parser.add_argument(
        "--evaluate",
        type=Path,
        metavar="CKPT",
        help="score this checkpoint on the job's test split into OUT/evaluation.json; train nothing",
    )
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
    logging.getLogger("tb_trainer").addHandler(handler)
    logging.getLogger("tb_trainer").setLevel(logging.INFO)

    from .config import ConfigError, Job

    try:
        job = Job.load(args.job, args.out)
    except ConfigError as e:
        print(f"error: invalid job: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        return EXIT_OK

    if args.evaluate is not None:
        from .evaluate import evaluate

        try:
            evaluate(job, args.evaluate)
        except ConfigError as e:
            print(f"error: cannot evaluate: {e}", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_OK

    from .train import train  # torch is imported only once the config is known good

    try:
        result = train(job)
    except ConfigError as e:
        print(f"error: invalid job: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if result.stop_reason == "interrupted":
        return 128 + (result.signal or 15)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
