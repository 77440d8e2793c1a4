"""Served model changed: the tiers of a behavioural fingerprint that need no probe of their own.

A host can swap the served model for one that refuses just as often (a cheaper model, another
family behind the same name): every refusal metric stays flat. Each answer says things about the
model that produced it, and the proxy reads them from every exchange it already has (production and
canaries alike), per model:

- **tokenizer** (near-deterministic): ``usage.prompt_tokens`` follows from the request as sent (its
  text, its messages, the API) through the model's tokenizer and chat template, and
  ``usage.completion_tokens`` from the answer's text. Over a baseline of answers the proxy fits each
  count by least squares on text features (:func:`text_features`: characters, words, symbols,
  non-ASCII bytes, messages); afterwards an answer whose count is off that fit by more than the
  baseline's own relative spread is a mark, and a CUSUM of marks (:class:`TokenFit`) alarms after
  four in a row for prompts, six for completions (an answer's text moves with the model's behaviour,
  so more of its counts stray). A change of tokenizer or template moves every later request off the
  fit. The completion side sees only large changes (one token per 4 bytes against one per word:
  74 % of answers marked); a template change shows on every prompt.
- **identity**: the response's ``model`` and ``system_fingerprint``: once a value was seen three
  answers in a row, another value three answers in a row is a change, with before and after.
- **statistical**: the canaries' answers themselves, a two-sample test between the first window and
  each later one (:mod:`~proxy.fingerprint.twosample`): what a host cannot forge as it can ``usage``
  and the reported identity.
- **production** (corroborating, never a change on its own): the shape of real traffic's answers,
  window against baseline (:mod:`~proxy.fingerprint.production`).

A change is a transition ``model_changed`` (to the notifier, the audit log and the traces, with its
tier and what changed) and ``refusal_guard_model_changed{model,tier}`` is 1 until an operator pins a
new baseline (``POST /admin/fingerprint/MODEL/baseline``).

One fingerprint for the fleet: each replica reads its answers (:mod:`~proxy.fingerprint.stage`,
production sampled) into the outbox, the canary leader fits the union and decides each change once
(:mod:`~proxy.fingerprint.watch`), and the state lives in the shared store beside the drift
statistics (``rg_fingerprint``), so it survives a restart and a change of leader.

- :mod:`~proxy.fingerprint.features`: what one exchange says (text features, counts, identities);
- :mod:`~proxy.fingerprint.tiers`: the per-answer tests (:class:`TokenFit`, :class:`Identity`);
- :mod:`~proxy.fingerprint.twosample`, :mod:`~proxy.fingerprint.production`: the window tests;
- :mod:`~proxy.fingerprint.watch`: the leader's state per model, its transitions and the store's rows;
- :mod:`~proxy.fingerprint.stage`: the pipeline stage on every replica.
"""

from proxy.fingerprint.features import observation, request_features, text_features
from proxy.fingerprint.stage import ObserveFingerprint
from proxy.fingerprint.tiers import Identity, TokenFit
from proxy.fingerprint.watch import TIERS, ModelFingerprint

__all__ = [
    "TIERS",
    "Identity",
    "ModelFingerprint",
    "ObserveFingerprint",
    "TokenFit",
    "observation",
    "request_features",
    "text_features",
]
