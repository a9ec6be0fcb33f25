"""The tree's shape: one concept per file keeps every file of the plugin and the server
short enough to read whole."""

from .conftest import REPO

MAX_LINES = 400


def test_no_file_of_the_plugin_or_the_server_exceeds_the_limit():
    long_files = {
        str(path.relative_to(REPO)): lines
        for root in ("sharp_plugin", "server")
        for path in (REPO / root).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long_files == {}
