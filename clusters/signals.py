"""Facts the clusters app announces to other apps. Listed in docs/architecture.md ("Signals");
received in registries.

Signals are sent inside the transaction that made the fact true, so a receiver's writes commit or
roll back with it. Receivers that start outside work must defer it with ``transaction.on_commit``.
"""

from django.dispatch import Signal

#: The cluster's first hosted queue was created. Sent with ``cluster`` and ``queue``, while the
#: cluster row is locked, so exactly one sender per cluster sees itself as first.
first_hosted_queue_created = Signal()

#: The cluster is being deleted. Sent with ``cluster`` inside the deleting transaction, with the
#: cluster row locked and still readable, before its queues, tokens and agent environment go with
#: it. Receivers release what they keep of the cluster (its registry starts deprovisioning).
cluster_deleted = Signal()
