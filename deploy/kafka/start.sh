#!/usr/bin/env bash
# Starts a Kafka node of the compose stack (apache/kafka:4.1.1, mounted at /opt/brewline/kafka).
#
# Clients and brokers log in with SASL/SCRAM-SHA-512, whose users KRaft keeps in its metadata
# log: the brokers' own user must be there before one broker connects to another, so it is
# written when the storage is formatted. The image formats with no --add-scram, so on the first
# start (no meta.properties yet) this formats the storage itself with every user of
# SCRAM_USERS ("name:password ..."), from the same server.properties the image makes of the
# KAFKA_* variables; then it runs the image's own start, which finds the storage formatted and
# leaves it. Users are written once: a password changed later is changed in the cluster
# (kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]'), then in .env.
#
# Also writes admin.properties, the admin's client settings (the health check uses them).
set -euo pipefail

: "${SCRAM_USERS:?set SCRAM_USERS: the SCRAM users, \"name:password ...\"}"
: "${CLUSTER_ID:?set CLUSTER_ID}"
: "${KAFKA_LOG_DIRS:?set KAFKA_LOG_DIRS}"

read -ra users <<<"$SCRAM_USERS"
scram=()
admin=""
for user in "${users[@]}"; do
  name=${user%%:*} password=${user#*:}
  # They go into JAAS settings and --add-scram's [name=...,password=...] unquoted.
  if [[ ! $name =~ ^[a-z][a-z0-9-]*$ || ! $password =~ ^[A-Za-z0-9]+$ ]]; then
    echo "SCRAM_USERS: user '$name': names are lower-case letters, digits and '-', passwords letters and digits only" >&2
    exit 1
  fi
  scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$password]")
  [[ $name != admin ]] || admin=$password
done
[[ -n $admin ]] || { echo "SCRAM_USERS has no user admin (the brokers' own)" >&2; exit 1; }

(
  umask 077
  cat >/opt/kafka/config/admin.properties <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
EOF
)

if [[ ! -e ${KAFKA_LOG_DIRS%%,*}/meta.properties ]]; then
  # The image's server.properties (kafka.docker.KafkaDockerWrapper): every KAFKA_* variable but
  # these, KAFKA_ dropped, lower case, "_" -> ".", "___" -> "-", "__" -> "_".
  props=$(mktemp)
  trap 'rm -f "$props"' EXIT
  for key in $(compgen -e); do
    case $key in
      KAFKA_VERSION | KAFKA_HEAP_OPTS | KAFKA_LOG4J_OPTS | KAFKA_OPTS | KAFKA_JMX_OPTS | \
        KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_GC_LOG_OPTS | KAFKA_LOG4J_ROOT_LOGLEVEL | \
        KAFKA_LOG4J_LOGGERS | KAFKA_TOOLS_LOG4J_LOGLEVEL | KAFKA_JMX_HOSTNAME) ;;
      KAFKA_*)
        name=${key#KAFKA_}
        name=${name,,}
        name=${name//_/.}
        name=${name//.../-}
        name=${name//../_}
        printf '%s=%s\n' "$name" "${!key}" >>"$props"
        ;;
    esac
  done
  echo "===> Formatting ${KAFKA_LOG_DIRS} with the SCRAM users of SCRAM_USERS"
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$CLUSTER_ID" --config "$props" "${scram[@]}"
  rm -f "$props"
  trap - EXIT
fi

unset SCRAM_USERS
exec /etc/kafka/docker/run
