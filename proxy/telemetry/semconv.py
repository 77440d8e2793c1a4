"""The names the proxy's traces use, in one place: OpenTelemetry semantic conventions **v1.37.0**
(GenAI: ``gen_ai.client.inference`` spans and the ``gen_ai.evaluation.result`` event, as the GenAI
repository defines them; HTTP server spans), plus the proxy's own ``refusal_guard.*`` attributes.

The Python package ``opentelemetry-semantic-conventions`` lags the GenAI spec (it marks the evaluation
names deprecated, moved to the GenAI repository), so the names are written out here rather than
imported. By default the deprecated ``gen_ai.system`` is emitted beside ``gen_ai.provider.name`` for
older backends; ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` drops it.
"""

from __future__ import annotations

VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{VERSION}"

# the inference (CLIENT) span: "{gen_ai.operation.name} {gen_ai.request.model}"
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM_DEPRECATED = "gen_ai.system"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"  # only with otel.capture_content
OUTPUT_MESSAGES = "gen_ai.output.messages"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

# the gen_ai.evaluation.result event, on the inference span it evaluates
EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_NAME = "gen_ai.evaluation.name"
EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"

# the SERVER span: "{http.request.method} {http.route}"
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"

# the proxy's own
TRAFFIC = "refusal_guard.traffic"  # production | canary: canaries are filtered by this, never by name
CANARY_SUITE = "refusal_guard.canary.suite"
DETECTOR = "refusal_guard.detector.name"
DETECTOR_VERSION = "refusal_guard.detector.version"
CHOICE_INDEX = "refusal_guard.choice.index"
UPSTREAM = "refusal_guard.upstream"
STREAM = "refusal_guard.stream"
TIME_TO_FIRST_CHUNK = "refusal_guard.time_to_first_chunk_ms"
FIRST_CHUNK_EVENT = "refusal_guard.first_chunk"
TRANSITION = "refusal_guard.drift.transition"
MODEL = "refusal_guard.model"
SUITE = "refusal_guard.drift.suite"

# operation names by endpoint (proxy.exchange.ENDPOINTS); the provider by the API spoken
OPERATIONS = {"chat": "chat", "completions": "text_completion", "responses": "chat", "messages": "chat"}
PROVIDERS = {"messages": "anthropic"}  # every other endpoint speaks OpenAI's API
