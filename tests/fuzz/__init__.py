"""Fuzz tests: hypothesis drives the parsers with generated and mutated input (see profiles.py)."""
