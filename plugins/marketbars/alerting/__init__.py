"""Alerts: what an alert says (``messages``) and the channels that send it (``channels``)."""
