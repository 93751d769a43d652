"""spark-submit entry point: rebuild gold and the ML feature table for a run (see shopstream.warehouse.gold).

    spark-submit spark/gold.py --run-id RUN
"""

from __future__ import annotations

import argparse
import json

from shopstream.settings import get_settings
from shopstream.spark_session import spark_session
from shopstream.warehouse import gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--result", help="write the result as JSON to this file")
    args = parser.parse_args()
    settings = get_settings()
    spark = spark_session(settings, "shopstream-gold")
    try:
        result = gold.build(spark, settings, args.run_id)
    finally:
        spark.stop()
    print(result.summary())
    if args.result:
        with open(args.result, "w") as f:
            json.dump(result.__dict__, f)


if __name__ == "__main__":
    main()
