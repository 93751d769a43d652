"""spark-submit entry point: rebuild gold and the ML feature table for a run (see shopstream.warehouse.gold).

    spark-submit spark/gold.py --run-id RUN
"""

from __future__ import annotations

import argparse

from shopstream.spark_session import run_job
from shopstream.warehouse import gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--result", help="write the result as JSON to this file")
    args = parser.parse_args()
    run_job("shopstream-gold", lambda spark, settings: gold.build(spark, settings, args.run_id), args.result)


if __name__ == "__main__":
    main()
