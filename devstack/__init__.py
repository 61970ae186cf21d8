"""Local development stack: real Redis, PostgreSQL, sandbox, control plane and supervisors."""
