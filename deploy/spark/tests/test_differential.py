"""The differential test: the same SQL on Spark (pyspark local[2], with delta-spark) and on
brewline (DataFusion), over the same bronze Delta tables, gives the same silver, gold and mart
Delta tables, row for row (doubles to 1e-9 relative). Spark reads brewline's lake where it is,
writes its results as Delta tables of its own, and both are read back as Delta.

Run: python deploy/spark/tests/test_differential.py LAKE STEPS_JSON DELTA_JARS OUT
where LAKE is a lake a batch run built, STEPS_JSON the manifest `brewline batch export` writes,
DELTA_JARS delta-spark's jars (comma-separated) and OUT a folder for Spark's tables
(scripts/test does all of it).
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import brewline_spark  # noqa: E402


def normal(value):
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def rows(df):
    return sorted(
        (tuple(normal(v) for v in r) for r in df.collect()),
        key=lambda r: tuple((v is None, str(v)) for v in r),
    )


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def main(lake: str, steps: str, delta_jars: str, out: str) -> None:
    with open(steps) as f:
        manifest = json.load(f)
    spark = brewline_spark.session("local[2]", None, delta_jars)
    brewline_spark.run(spark, manifest, lake, "delta", out)
    checked = 0
    for t in manifest:
        if t["sql"] is None:
            continue
        theirs = spark.read.format("delta").load(os.path.join(out, t["table"]))
        ours = spark.read.format("delta").load(os.path.join(lake, t["table"]))
        columns = ours.columns
        assert theirs.columns == columns, (t["table"], theirs.columns, columns)
        a, b = rows(theirs.select(*columns)), rows(ours.select(*columns))
        assert len(a) == len(b), (t["table"], len(a), len(b))
        for x, y in zip(a, b):
            assert len(x) == len(y) and all(same(p, q) for p, q in zip(x, y)), (t["table"], x, y)
        assert a or t["table"] in ("mart/product_affinity",), f"{t['table']} is empty"
        checked += 1
    spark.stop()
    print(f"spark and brewline agree on {checked} Delta tables, row for row")


if __name__ == "__main__":
    main(*sys.argv[1:5])
