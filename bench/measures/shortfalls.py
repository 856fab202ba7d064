"""Why a measure misses its goal, as the report quotes it (``Measure.shortfall``): what was
measured, when, on which commit, and what stands between the code and the goal."""

ATTEMPT_SHORTFALL = (
    "Measured 2026-12-01 (make bench on a fresh clone of 0bff8da, the machine otherwise idle): "
    "the floors in the details are above the goals, so no implementation reaches them on this "
    "machine. P4: the floor drain (the statements an attempt must send, by hand on the task's "
    "own connection, no ORM, log line or metric: the pool's connection check, BEGIN, the "
    "cluster and registry locks, the events, the UPDATE, the upsert, a durable COMMIT; 8 round "
    "trips to PostgreSQL where the no-op makes one to Redis) took 1.99× the no-ops' time "
    "(1.76-2.22 over the rounds) against the goal's 1.5×; the product's drain took 3.40 against "
    "the floor's 2.54 s (3.1 against 2.1 ms of worker CPU a task: the ORM's transaction, the "
    "attempt's log line and metrics; 7 statements since the events' INSERT was compiled and the "
    "attempt's first read folded into the cluster lock). P3 p50: the floor of a sample (the "
    "rows a first hosted queue must write and a durable COMMIT, the message on commit, the "
    "floor attempt) was 2.82× (threads) and 2.97× (prefork) the no-op's round trip at p50, "
    "against the goal's 2×; the product was 3.10× and 2.97×, within 1.10× and 1.00× of its "
    "floor. P3 p95 met its goal (2.45×, 2.26×). What separates both floors from the no-op is "
    "PostgreSQL's round trips and two durable commits (profiled in-process with other work "
    "writing WAL, a COMMIT took 3.1 of an attempt's 7.9 ms; 0.16 ms with synchronous_commit "
    "off, which the product keeps on: the registry rows are the durable record of the work "
    "owed)."
)


P4B_SHORTFALL = (
    "Measured 2026-12-02 (a fresh clone of 5ac2637): 12 statements, 8 before issue 17. The four "
    "added are the audit log's, which issue 17 asks for in each write's own transaction: the "
    "cluster's INSERT becomes BEGIN, INSERT, the audit row's INSERT, COMMIT, and the queue's "
    "transaction gains its audit row. Ten is out of reach without folding the cluster and its "
    "audit row into one statement (a data-modifying CTE around the ORM's save); the goal "
    "predates the audit log."
)
