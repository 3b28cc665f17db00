# Sourced by every script: where builds, tools and running services live (outside the clone).
export HELIOS_CACHE=${HELIOS_CACHE:-/var/cache/helios}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HELIOS_CACHE/target}
export HELIOS_TOOLS=${HELIOS_TOOLS:-$HELIOS_CACHE/tools}
export HELIOS_RUN=${HELIOS_RUN:-$HELIOS_CACHE/run}
export PATH="$HELIOS_TOOLS/bin:$PATH"
# Service ports (loopback only). Override to run two stacks side by side.
export HELIOS_REDIS_PORT=${HELIOS_REDIS_PORT:-6390}
export HELIOS_PG_PORT=${HELIOS_PG_PORT:-5440}
export HELIOS_KAFKA_PORT=${HELIOS_KAFKA_PORT:-9092}
export HELIOS_REDIS_URL=${HELIOS_REDIS_URL:-redis://127.0.0.1:$HELIOS_REDIS_PORT/}
export HELIOS_PG_URL=${HELIOS_PG_URL:-postgres://helios:helios@127.0.0.1:$HELIOS_PG_PORT/helios}
export HELIOS_KAFKA_BROKERS=${HELIOS_KAFKA_BROKERS:-127.0.0.1:$HELIOS_KAFKA_PORT}
