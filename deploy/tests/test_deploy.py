"""Checks of deploy/ that need no Docker engine: the compose stacks (every service with its
image, resources, health check and ordered dependencies; data on named volumes; no committed
credential; every brewline command and flag they run exists; one internal network with only
the dashboard and Grafana published; a MySQL user per role with `brewline db grants`'
statements; the lake written with its own keys), the Prometheus configuration
and rules (promtool), and the Grafana dashboard (every query names a metric brewline exports).

Run: python deploy/tests/test_deploy.py BREWLINE_BIN (scripts/test does).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import yaml

DEPLOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ROOT = os.path.join(DEPLOY, "..")
STATEFUL = {
    "mysql": "mysql-data",
    "kafka-1": "kafka-1-data",
    "kafka-2": "kafka-2-data",
    "kafka-3": "kafka-3-data",
    "redis": "redis-data",
    "grafana": "grafana-data",
    "minio": "minio-data",
    "postgres": "postgres-data",
}


def load(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return yaml.safe_load(f)


def brewline_args(service):
    """The brewline arguments a service runs, or None when it runs something else."""
    image = service.get("image", "")
    if not image.startswith("brewline:"):
        return None
    command = service.get("command", [])
    if service.get("entrypoint"):  # a shell: `brewline a && brewline b`
        return [c.split()[1:] for c in " ".join(command).split("&&")]
    return [command]


def check_compose(brewline):
    checked = 0
    for name in ("docker-compose.yaml", "docker-compose-batch.yaml"):
        stack = load(name)
        volumes = set(stack.get("volumes", {}))
        for sname, s in stack["services"].items():
            where = f"{name}: {sname}"
            assert s.get("image"), f"{where}: no image"
            res = s.get("deploy", {}).get("resources", {})
            for kind in ("limits", "reservations"):
                assert res.get(kind, {}).get("cpus") and res[kind].get("memory"), f"{where}: {kind}"
            one_shot = s.get("restart") == "no"
            hc = s.get("healthcheck", {})
            assert one_shot or hc.get("test"), f"{where}: no health check"
            deps = s.get("depends_on", {})
            assert isinstance(deps, dict), f"{where}: depends_on without conditions"
            for dep, cond in deps.items():
                assert dep in stack["services"] or name.endswith("batch.yaml"), f"{where}: {dep}?"
                assert cond.get("condition") in (
                    "service_healthy",
                    "service_completed_successfully",
                    "service_started",
                ), f"{where}: {dep} has no condition"
            for port in s.get("ports", []):
                assert re.fullmatch(r"\d+:\d+", str(port)), f"{where}: port {port}"
            if sname in STATEFUL:
                mounts = [str(v).split(":")[0] for v in s.get("volumes", [])]
                assert STATEFUL[sname] in mounts and STATEFUL[sname] in volumes, f"{where}: data volume"
            env = s.get("environment", {})
            for key, value in (env.items() if isinstance(env, dict) else []):
                if re.search("PASSWORD|SECRET", key):
                    assert "${" in str(value), f"{where}: {key} is written in the file"
            for args in brewline_args(s) or []:
                words = [a for a in args if not a.startswith("-")]
                sub = words[:2] if len(words) > 1 and words[0] in ("batch", "cache", "db", "topics") else words[:1]
                out = subprocess.run([brewline, *sub, "--help"], capture_output=True, text=True)
                assert out.returncode == 0, f"{where}: brewline {' '.join(sub)}: {out.stderr}"
                for flag in (a for a in args if a.startswith("--")):
                    assert flag in out.stdout, f"{where}: brewline {' '.join(sub)} has no {flag}"
            checked += 1
    recommend = load("docker-compose.yaml")["services"]["recommend"]
    assert "container_name" not in recommend and "ports" not in recommend, "recommend must scale"
    return checked


# What each stack publishes on the host: the dashboard (behind its token) and Grafana, nothing
# else (docker-compose-dev.yaml publishes the rest, on 127.0.0.1, for development).
PUBLISHED = {
    "docker-compose.yaml": {"serve": ["8080:8080"], "grafana": ["3000:3000"]},
    "docker-compose-batch.yaml": {},
}
# The MySQL user each brewline process logs in as: its role's (`brewline db grants`); only
# init, which makes the tables, is the administrator.
MYSQL_USER = {
    "init": "${MYSQL_USER",
    "cdc": "brewline_capture",
    "cache": "brewline_cache",
    "serve": "brewline_cache",
    "batch": "brewline_batch",
    "airflow": "brewline_batch",
}


def networks_of(service):
    n = service.get("networks", [])
    return set(n) if isinstance(n, (list, dict)) else set()


def check_isolation(brewline):
    """One internal network, only the dashboard and Grafana published, a database user per
    role with exactly `brewline db grants`' statements, the lake written with its own keys."""
    for name, published in PUBLISHED.items():
        stack = load(name)
        assert stack["networks"]["internal"].get("internal") is True, f"{name}: internal network"
        for sname, s in stack["services"].items():
            where = f"{name}: {sname}"
            nets = networks_of(s)
            assert "internal" in nets, f"{where}: not on the internal network"
            ports = published.get(sname, [])
            assert s.get("ports", []) == ports, f"{where}: publishes {s.get('ports')}"
            assert ("edge" in nets) == bool(ports), f"{where}: on the edge network {nets}"
            env = s.get("environment", {})
            env = env if isinstance(env, dict) else {}
            url = env.get("BREWLINE_MYSQL__URL")
            if brewline_args(s) is not None or sname == "airflow":
                if url is not None:
                    user = url.split("//", 1)[1].split(":", 1)[0]
                    assert user == MYSQL_USER.get(sname), f"{where}: logs in to MySQL as {user}"
                for key, value in env.items():
                    assert "MINIO_ROOT" not in str(value), f"{where}: {key} uses MinIO's root keys"
    dev = load("docker-compose-dev.yaml")
    for sname, s in dev["services"].items():
        assert set(s) <= {"networks", "ports"}, f"dev: {sname} changes more than ports"
        for port in s["ports"]:
            assert port.startswith("127.0.0.1:"), f"dev: {sname} publishes {port} beyond loopback"
    with open(os.path.join(DEPLOY, "mysql", "grants.sh")) as f:
        script = [l.replace("\\`", "`") for l in f.read().splitlines() if l.startswith("GRANT ") and "brewline_" in l]
    out = subprocess.run([brewline, "db", "grants", "--flavor", "mysql"], capture_output=True, text=True, check=True)
    printed = [l for l in out.stdout.splitlines() if l.startswith("GRANT ")]
    assert script == printed, f"mysql/grants.sh differs from `brewline db grants --flavor mysql`:\n{script}\n{printed}"
    return len(printed)


def exported_metrics():
    with open(os.path.join(ROOT, "crates", "metrics", "src", "lib.rs")) as f:
        names = set(re.findall(r'"(brewline_[a-z_]+)"', f.read()))
    return names | {n + s for n in names for s in ("_bucket", "_sum", "_count")}


def check_grafana():
    exported = exported_metrics()
    with open(os.path.join(DEPLOY, "grafana", "dashboards", "brewline.json")) as f:
        dashboard = json.load(f)
    queries = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used = set(re.findall(r"brewline_[a-z_]+", target["expr"]))
            assert used, f"panel {panel['title']}: no brewline metric"
            assert used <= exported, f"panel {panel['title']}: {used - exported} not exported"
            queries += 1
    return queries


def check_prometheus():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    p = os.path.join(DEPLOY, "prometheus")
    subprocess.run([promtool, "check", "config", os.path.join(p, "prometheus.yml")], check=True)
    subprocess.run([promtool, "check", "rules", os.path.join(p, "rules", "brewline.yml")], check=True)
    exported = exported_metrics()
    with open(os.path.join(p, "rules", "brewline.yml")) as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"brewline_[a-z_]+", rule["expr"]))
            assert used <= exported, f"rule {rule['alert']}: {used - exported} not exported"


def main(brewline):
    services = check_compose(brewline)
    grants = check_isolation(brewline)
    queries = check_grafana()
    check_prometheus()
    print(f"deploy: {services} compose services, isolation and {grants} role grants, {queries} Grafana queries, Prometheus config and rules checked")


if __name__ == "__main__":
    main(sys.argv[1])
