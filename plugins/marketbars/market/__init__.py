"""The vocabulary, pure: timeframes and the bar schema, symbols, the XNYS calendar, row validation,
rollups, provenance. Imports nothing else of the project."""
