"""Access control (spec §9): JWT verification, roles, the Actor, permissions, step-up MFA."""
