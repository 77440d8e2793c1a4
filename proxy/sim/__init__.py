"""``refusal-guard sim-upstream``: an OpenAI-compatible reference upstream that replays real answers.

See :mod:`proxy.sim.corpus` for where the answers come from and :mod:`proxy.sim.app` for the server.
"""
