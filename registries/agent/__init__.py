"""The agent endpoints of the registries app: the registry credential a job gets instead of the
cluster agent token (``views``), which the agent's ``environment`` hook asks for and its
``pre-exit`` hook revokes (deploy/agent/hooks/)."""
