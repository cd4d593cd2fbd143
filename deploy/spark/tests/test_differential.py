"""The differential test: the same SQL on Spark (pyspark, local[2]) and on brewline
(DataFusion), over the same bronze data, gives the same silver, gold and mart tables, row for
row (doubles to 1e-9 relative).

Run: python deploy/spark/tests/test_differential.py EXPORT_DIR
where EXPORT_DIR is what `brewline batch export --to EXPORT_DIR` wrote after a batch run
(scripts/test does both).
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


def main(export: str) -> None:
    with open(os.path.join(export, "steps.json")) as f:
        manifest = json.load(f)
    spark = brewline_spark.session("local[2]")
    results = brewline_spark.run(spark, manifest, export, "parquet", None)
    checked = 0
    for t in manifest:
        if t["sql"] is None:
            continue
        theirs = results[t["table"]]
        ours = spark.read.parquet(os.path.join(export, t["table"] + ".parquet"))
        columns = ours.columns
        assert theirs.columns == columns, (t["table"], theirs.columns, columns)
        a, b = rows(theirs.select(*columns)), rows(ours.select(*columns))
        assert len(a) == len(b), (t["table"], len(a), len(b))
        for x, y in zip(a, b):
            assert len(x) == len(y) and all(same(p, q) for p, q in zip(x, y)), (t["table"], x, y)
        assert a or t["table"] in ("mart/product_affinity",), f"{t['table']} is empty"
        checked += 1
    spark.stop()
    print(f"spark and brewline agree on {checked} tables, row for row")


if __name__ == "__main__":
    main(sys.argv[1])
