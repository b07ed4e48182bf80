"""Judgment: pure functions from numbers to outcomes (statistics, rules, run-level decision); no I/O."""
