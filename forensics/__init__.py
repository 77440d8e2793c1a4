"""Forensics for a model that misbehaves: ``refusal-guard weights diff`` (:mod:`forensics.diff`)."""
