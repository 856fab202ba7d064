"""The agent endpoint, ``GET /v3/agent/environment``: what a job on a cluster's agents receives,
for agents that authenticate with their cluster agent token.

- ``views``: the endpoint; the environment itself is ``clusters.job_environment``, shared with the
  REST API's queue environment.
- ``authentication``: the cluster agent token (``Authorization: Token <token>``).
- ``renderers``: ``export`` lines for the agent's ``environment`` hook (``?format=shell``).
"""
