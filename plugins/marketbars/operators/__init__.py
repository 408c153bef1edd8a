"""Operators: thin orchestration over hooks, storage and pure rules, mappable across dates or symbols."""
