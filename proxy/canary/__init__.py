"""Canaries: known-answer safety prompts sent on a schedule, and the drift tests that judge the answers."""
