"""Service URLs with secrets in them (zookeeper://user:password@..., redis://:password@...): what may be shown."""

from __future__ import annotations

import re


def redact(url: str) -> str:
    """`url` as logs and messages may show it: its password replaced by ***."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
