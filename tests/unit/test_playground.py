"""The playground page (GET /playground, unit) without a browser: it needs no key and embeds
none, and loads nothing from elsewhere. On a fake-engine server with scripted rewards
(tests/support/playground.py). The page in a browser: tests/engine/test_playground.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.playground import serve_playground

# ---- a fake-engine server with scripted rewards named like the real ones --------------------


@pytest.fixture(scope="module")
def playground_server() -> Iterator[tuple[str, str]]:
    with serve_playground() as served:  # tests/support/playground.py
        yield served


def test_playground_page_needs_no_key_and_embeds_none(playground_server):
    base, key = playground_server
    page = httpx.get(base + "/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert key not in page.text and "Bearer " + key not in page.text
    # nothing loaded from elsewhere (the SVG namespace URI is a name, not a fetch)
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", page.text)
    assert re.findall(r"fetch\(([^,)]+)", page.text) == [
        '"/v1/strategies"',
        '"/v1/models"',
        '"/v1/chat/completions"',
    ]
    assert httpx.get(base + "/v1/strategies").status_code == 401
    assert "/playground" not in httpx.get(base + "/openapi.json").json()["paths"]
