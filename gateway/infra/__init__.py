"""Plumbing every layer may use: the Redis link, the listening socket, the started signal and caller deadlines."""
