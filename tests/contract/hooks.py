"""schemathesis hooks of tests/contract/run.py (loaded through SCHEMATHESIS_HOOKS).

POST /ssf/push/{id} takes `application/secevent+jwt` (a SET as compact JWS text, RFC 8935),
which schemathesis has no serializer for: it is sent as the text it generates, like text/plain.
"""

import schemathesis

schemathesis.serializer.alias("application/secevent+jwt", "text/plain")
