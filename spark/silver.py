"""spark-submit entry point: rebuild silver for a run (see shopstream.warehouse.silver).

    spark-submit spark/silver.py --run-id RUN [--start ISO --end ISO] [--restate-from ISO --restate-to ISO]
"""

from __future__ import annotations

import argparse

from shopstream.spark_session import run_job
from shopstream.warehouse import silver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--start", help="also rebuild bronze hours from this event time (ISO-8601; empty: none)")
    parser.add_argument("--end", help="... up to this event time (exclusive; empty: no end)")
    parser.add_argument("--restate-from", help="bring the late events set aside from this event time back "
                                               "into silver (ISO-8601; empty: none)")
    parser.add_argument("--restate-to", help="... up to this event time (exclusive; empty: no end)")
    parser.add_argument("--result", help="write the result as JSON to this file")
    args = parser.parse_args()
    run_job("shopstream-silver",
            lambda spark, settings: silver.build(spark, settings, args.run_id, args.start or None, args.end or None,
                                                 args.restate_from or None, args.restate_to or None),
            args.result)


if __name__ == "__main__":
    main()
