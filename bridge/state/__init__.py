"""Durable state on this bridge: the audit outbox, the learned cache, version floors, lifecycle and
integrity checks of the state databases, and the rules for the files and folders they live in."""
