"""Hooks: each owns one connection and its wire protocol."""
