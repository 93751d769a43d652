"""spark-submit entry point: rebuild silver for a run (see shopstream.warehouse.silver).

    spark-submit spark/silver.py --run-id RUN [--start ISO --end ISO]
"""

from __future__ import annotations

import argparse
import json

from shopstream.settings import get_settings
from shopstream.spark_session import spark_session
from shopstream.warehouse import silver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--start", help="also rebuild bronze hours from this event time (ISO-8601)")
    parser.add_argument("--end", help="... up to this event time (exclusive)")
    parser.add_argument("--result", help="write the result as JSON to this file")
    args = parser.parse_args()
    settings = get_settings()
    spark = spark_session(settings, "shopstream-silver")
    try:
        result = silver.build(spark, settings, args.run_id, args.start or None, args.end or None)
    finally:
        spark.stop()
    print(result.summary())
    if args.result:
        with open(args.result, "w") as f:
            json.dump(result.__dict__, f)


if __name__ == "__main__":
    main()
