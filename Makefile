# The two commands of the quickstart. Each installs what it needs (PostgreSQL, Redis and, for
# tests, Chromium, from Debian's packages) and starts private instances under .dev/.
.PHONY: run test bench stop

run:
	@bash scripts/devenv.sh run

test:
	@bash scripts/devenv.sh test

# Throughput of the job queue, thread pages and payments end to end (bench/results.md), the
# merchants' dashboard and API at 1,000,000 payments (bench/merchants.md), the chat API
# (bench/chat.md), and the cluster's shape at 1 + 1, 2 + 2 and 3 + 2 processes (bench/scale.md).
bench:
	@bash scripts/devenv.sh bench

# Stops the private PostgreSQL and Redis that `make test` leaves running for the next run.
stop:
	@bash scripts/devenv.sh stop
