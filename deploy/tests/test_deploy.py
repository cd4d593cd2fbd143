"""Checks of deploy/ that need no Docker engine: the compose stacks (every service with its
image, resources, health check and ordered dependencies; data on named volumes; no committed
credential; every brewline command and flag they run exists; one internal network with only
the dashboard and Grafana published; a MySQL user per role with `brewline db grants`'
statements; the lake written with its own keys; every Kafka listener and every Kafka client
of the services on SASL, as users the nodes make, no password written in the files), the
Prometheus configuration
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


# apache/kafka's image makes server.properties of the KAFKA_* variables but these
# (kafka.docker.KafkaDockerWrapper; deploy/kafka/start.sh makes the same to format).
KAFKA_IMAGE_NOT_PROPERTIES = {
    "KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME",
}
# A compose variable: ${NAME}, ${NAME:?message}, ...
VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}")


def kafka_server_properties(env):
    """A Kafka node's server.properties as the image makes it of the node's environment:
    KAFKA_ dropped, lower case, "_" -> ".", "___" -> "-", "__" -> "_"."""
    props = {}
    for key, value in env.items():
        if key.startswith("KAFKA_") and key not in KAFKA_IMAGE_NOT_PROPERTIES:
            name = key[len("KAFKA_"):].lower().replace("_", ".").replace("...", "-").replace("..", "_")
            props[name] = str(value)
    return props


def jaas_login(jaas):
    """(user name, password) of a JAAS login module's settings."""
    user = re.search(r'\busername="([^"]*)"', jaas)
    password = re.search(r'\bpassword="([^"]*)"', jaas)
    return (user and user.group(1), password and password.group(1))


def variable(value):
    """The compose variable a value is made of alone (${NAME...}), else None."""
    m = VARIABLE.fullmatch(str(value).strip())
    return m and m.group(1)


def check_kafka_auth():
    """Every Kafka connection between the services logs in with SASL: every listener of every
    node is SASL_*, each with a JAAS login for each of its mechanisms; the brokers log in to
    each other with SCRAM as a user the nodes write when they format their storage
    (kafka/start.sh), the controllers with a mechanism they can check before the metadata log
    is read (not SCRAM); every service that names the brokers (brewline, Kafka Connect's
    worker, producers and consumers, its connector's schema history, Kafka UI) logs in as one
    of those users with the password of that user's variable; no password, nor PLAIN user's,
    is written in the files: ${VARIABLE}s from .env (listed empty in .env.example) or, for the
    connector, ${file:...} from its secrets folder."""
    stack = load("docker-compose.yaml")
    users = {}  # SCRAM user -> the .env variable of its password
    scram_mechanisms = set()
    nodes = {n: s for n, s in stack["services"].items() if s["image"].startswith("apache/kafka:")}
    assert len(nodes) == 3, f"Kafka nodes: {sorted(nodes)}"
    for name, s in nodes.items():
        where = f"docker-compose.yaml: {name}"
        env = s["environment"]
        props = kafka_server_properties(env)
        protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))

        def mechanisms(listener):
            value = props.get(f"listener.name.{listener.lower()}.sasl.enabled.mechanisms",
                              props.get("sasl.enabled.mechanisms", "GSSAPI"))
            return [m.strip() for m in value.split(",")]

        listeners = [l.split("://")[0] for l in props["listeners"].split(",")]
        for listener in listeners:
            protocol = protocols.get(listener, listener)
            assert protocol.startswith("SASL_"), f"{where}: listener {listener} is {protocol}, not SASL"
            for mechanism in mechanisms(listener):
                key = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"
                assert key in props, f"{where}: listener {listener} has no {key}"
        inter = props["inter.broker.listener.name"]
        mechanism = props.get("sasl.mechanism.inter.broker.protocol", "GSSAPI")
        assert mechanism.startswith("SCRAM-") and mechanism in mechanisms(inter), \
            f"{where}: brokers log in to each other with {mechanism} on {inter} ({mechanisms(inter)})"
        scram_mechanisms.update(m for m in mechanisms(inter) if m.startswith("SCRAM-"))
        jaas = props[f"listener.name.{inter.lower()}.{mechanism.lower()}.sasl.jaas.config"]
        broker, broker_password = jaas_login(jaas)
        controller = props["controller.listener.names"]
        mechanism = props.get("sasl.mechanism.controller.protocol", "GSSAPI")
        assert mechanism in mechanisms(controller), f"{where}: {mechanism} not enabled on {controller}"
        # SCRAM users are in the metadata log, which a controller reads once there is a leader.
        assert not mechanism.startswith("SCRAM-"), f"{where}: controllers cannot log in with {mechanism}"
        if mechanism == "PLAIN":
            jaas = props[f"listener.name.{controller.lower()}.plain.sasl.jaas.config"]
            user, password = jaas_login(jaas)
            assert user and variable(password), f"{where}: the controllers' PLAIN login"
            assert re.search(rf'\buser_{re.escape(user)}="([^"]*)"', jaas), f"{where}: no PLAIN user {user}"
        assert s.get("entrypoint") == ["/bin/bash", "/opt/brewline/kafka/start.sh"], f"{where}: entrypoint"
        assert "./kafka:/opt/brewline/kafka:ro" in s.get("volumes", []), f"{where}: kafka/ not mounted"
        # The users start.sh writes at format time, name:${VARIABLE} each.
        scram_users = str(env.get("SCRAM_USERS", ""))
        entry = r"([a-z][a-z0-9-]*):(\$\{[^}]*\})"
        assert re.fullmatch(rf"\s*{entry}(\s+{entry})*\s*", scram_users), \
            f"{where}: SCRAM_USERS is not name:${{VARIABLE}} ...: {scram_users}"
        node_users = {user: variable(password) for user, password in re.findall(entry, scram_users)}
        assert users in ({}, node_users), f"{where}: SCRAM_USERS differ between the nodes"
        users = node_users
        assert broker in users and variable(broker_password) == users[broker], \
            f"{where}: the brokers log in as {broker}, not a SCRAM user of SCRAM_USERS with its password"
        health = " ".join(s["healthcheck"]["test"])
        assert "--command-config" in health, f"{where}: the health check does not log in"

    def check_login(where, protocol, mechanism, user, password):
        assert str(protocol).upper().startswith("SASL_"), f"{where}: Kafka over {protocol}, not SASL"
        assert mechanism in scram_mechanisms, f"{where}: the brokers take {scram_mechanisms}, not {mechanism}"
        assert user in users, f"{where}: Kafka user {user} is not one the nodes make ({sorted(users)})"
        assert variable(password) == users[user], f"{where}: {user}'s password is not ${{{users[user]}}}"

    clients = 0
    for file in ("docker-compose.yaml", "docker-compose-batch.yaml"):
        for name, s in load(file)["services"].items():
            if name in nodes:
                continue
            where = f"{file}: {name}"
            env = s.get("environment", {})
            env = {k: str(v) for k, v in (env.items() if isinstance(env, dict) else [])}
            naming = {k for k, v in env.items() if re.search(r"\bkafka-\d+:\d+", v)}
            for key in naming:
                if key == "BREWLINE_KAFKA__BROKERS":
                    p = "BREWLINE_KAFKA__SECURITY__"
                    mechanism = env.get(p + "SASL_MECHANISM", "SCRAM-SHA-512")  # brewline's default
                    check_login(where, env.get(p + "PROTOCOL"), mechanism,
                                env.get(p + "USERNAME"), env.get(p + "PASSWORD"))
                elif key == "BOOTSTRAP_SERVERS" and s["image"].startswith("quay.io/debezium/connect:"):
                    # The worker (and the admin client it makes), its connectors' producers, consumers.
                    for p in ("CONNECT_", "CONNECT_PRODUCER_", "CONNECT_CONSUMER_"):
                        check_login(f"{where}: {p}*", env.get(p + "SECURITY_PROTOCOL"),
                                    env.get(p + "SASL_MECHANISM"), *jaas_login(env.get(p + "SASL_JAAS_CONFIG", "")))
                    assert "./connect/secrets:/kafka/secrets:ro" in s.get("volumes", []), f"{where}: secrets"
                elif re.fullmatch(r"KAFKA_CLUSTERS_\d+_BOOTSTRAPSERVERS", key):
                    p = key.replace("BOOTSTRAPSERVERS", "PROPERTIES_")
                    check_login(where, env.get(p + "SECURITY_PROTOCOL"), env.get(p + "SASL_MECHANISM"),
                                *jaas_login(env.get(p + "SASL_JAAS_CONFIG", "")))
                else:
                    raise AssertionError(f"{where}: {key} names the brokers: give it SASL settings (and this check)")
                clients += 1
    # The connector's schema history has its own producer and consumer; its password comes from
    # the secrets folder, through the worker's FileConfigProvider.
    connect_dir = os.path.join(DEPLOY, "connect")
    for file in sorted(f for f in os.listdir(connect_dir) if f.endswith(".json")):
        with open(os.path.join(connect_dir, file)) as f:
            connector = json.load(f)
        if "schema.history.internal.kafka.bootstrap.servers" not in connector:
            continue
        for side in ("producer", "consumer"):
            p = f"schema.history.internal.{side}."
            user, password = jaas_login(connector.get(p + "sasl.jaas.config", ""))
            where = f"connect/{file}: {p}*"
            assert connector.get(p + "security.protocol", "").startswith("SASL_"), f"{where}: not SASL"
            assert connector.get(p + "sasl.mechanism") in scram_mechanisms, f"{where}: mechanism"
            assert user in users, f"{where}: Kafka user {user} is not one the nodes make"
            assert re.fullmatch(r"\$\{file:/kafka/secrets/[\w.-]+:\w+\}", password or ""), \
                f"{where}: the password is not ${{file:/kafka/secrets/...}}"
            clients += 1
    # No password written in the files: every JAAS password= and PLAIN user_NAME= is a reference.
    texts = {}
    for name in ("docker-compose.yaml", "docker-compose-batch.yaml", "docker-compose-dev.yaml") + tuple(
        f"connect/{n}" for n in sorted(os.listdir(connect_dir)) if n.endswith(".json")
    ):
        with open(os.path.join(DEPLOY, name)) as f:
            texts[name] = f.read()
    for name, text in texts.items():
        for m in re.finditer(r'\b(password|user_[\w-]+)=\\?"(?!\$\{)', text):
            raise AssertionError(f"{name}: a password written in the file: {text[m.start():m.start() + 20]}...")
    # Every variable the stacks need is in .env.example; passwords there are empty.
    with open(os.path.join(ROOT, ".env.example")) as f:
        example = dict(l.split("=", 1) for l in f.read().splitlines() if l and not l.startswith("#"))
    for name in ("docker-compose.yaml", "docker-compose-batch.yaml"):
        for var in set(VARIABLE.findall(texts[name])):
            assert var in example, f".env.example has no {var} ({name} needs it)"
            assert not (re.search("PASSWORD|SECRET", var) and example[var]), f".env.example: {var} is set"
    return clients


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
    kafka_clients = check_kafka_auth()
    queries = check_grafana()
    check_prometheus()
    print(f"deploy: {services} compose services, isolation and {grants} role grants, Kafka SASL on every listener and {kafka_clients} clients, {queries} Grafana queries, Prometheus config and rules checked")


if __name__ == "__main__":
    main(sys.argv[1])
