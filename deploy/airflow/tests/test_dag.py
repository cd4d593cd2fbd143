"""Imports the brewline DAG with Airflow from PyPI: no import errors, the tasks in order with
each layer's gate its own task, and every brewline command the DAG runs exists (checked with
`brewline ... --help` when BREWLINE_BIN points at the binary).

Run: python deploy/airflow/tests/test_dag.py (scripts/test does, in its virtualenv).
"""

import os
import shlex
import subprocess
import sys
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="brewline-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"

from airflow.models.dagbag import DagBag  # noqa: E402

DAGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dags")


def main() -> None:
    bag = DagBag(dag_folder=DAGS, include_examples=False)
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.dags["brewline_batch"]
    order = [t.task_id for t in dag.topological_sort()]
    expected = [
        "bronze",
        "gate_bronze",
        "silver",
        "gate_silver",
        "gold",
        "gate_gold",
        "publish_affinity",
        "optimize",
        "vacuum",
    ]
    assert order == expected, order
    for before, after in zip(expected, expected[1:]):
        assert dag.get_task(after).upstream_task_ids == {before}, (before, after)
    assert dag.max_active_runs == 1
    for gate in ("gate_bronze", "gate_silver", "gate_gold"):
        assert dag.get_task(gate).retries == 0, gate

    brewline = os.environ.get("BREWLINE_BIN")
    if brewline:
        for task in dag.tasks:
            args = shlex.split(task.bash_command)[1:]
            words = [a for a in args if not a.startswith("-")]
            # `brewline batch run --help` fails if the subcommand does not exist, and each
            # flag the DAG passes must appear in the subcommand's help.
            sub = words[:2]
            help_text = subprocess.run(
                [brewline, *sub, "--help"], check=True, capture_output=True, text=True
            ).stdout
            for flag in (a for a in args if a.startswith("--")):
                assert flag in help_text, (task.task_id, flag)
    print(f"airflow DAG brewline_batch: {len(order)} tasks in order: {' -> '.join(order)}")


if __name__ == "__main__":
    main()
    sys.exit(0)
