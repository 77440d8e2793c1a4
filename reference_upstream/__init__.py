"""``refusal-guard sim-upstream``: an OpenAI-compatible reference upstream that replays real answers.

See :mod:`reference_upstream.corpus` for where the answers come from and :mod:`reference_upstream.app` for the server.
"""
