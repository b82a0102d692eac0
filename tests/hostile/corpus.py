"""The whole request corpus, in one list (each module holds one family of rules)."""

from __future__ import annotations

from tests.hostile.case import Case
from tests.hostile.corpus_fields import FIELD_SYNTAX, HOST_RULES, LIMITS
from tests.hostile.corpus_framing import CHUNKED, FRAMING
from tests.hostile.corpus_paths import PATHS
from tests.hostile.corpus_request_line import REQUEST_FORMS, REQUEST_LINES

CORPUS: list[Case] = [
    *FRAMING,
    *CHUNKED,
    *PATHS,
    *REQUEST_FORMS,
    *REQUEST_LINES,
    *HOST_RULES,
    *FIELD_SYNTAX,
    *LIMITS,
]
