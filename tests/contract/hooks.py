"""schemathesis hooks of tests/contract/run.py (loaded through SCHEMATHESIS_HOOKS).

POST /ssf/push/{id} takes `application/secevent+jwt` (a SET as compact JWS text, RFC 8935),
which schemathesis has no serializer for: it is sent as the text it generates, like text/plain.

`ast.parse` is made to run in one thread at a time. hypothesis parses source to describe each
filtered strategy, and schemathesis draws them in two worker threads; CPython 3.11 can then fail
a parse with "AST constructor recursion depth mismatch" (its AST conversion keeps the depth in
state the threads share). That crash of the tool, twice in a row, failed a CI run.
"""

import ast
import threading

import schemathesis

schemathesis.serializer.alias("application/secevent+jwt", "text/plain")

_parse = ast.parse
_one_parse_at_a_time = threading.Lock()


def _parse_alone(*args, **kwargs):
    with _one_parse_at_a_time:
        return _parse(*args, **kwargs)


ast.parse = _parse_alone
