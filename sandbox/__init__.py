"""Sandbox: the embedded services and sample market behind the demo, the tests and the benchmarks."""
