"""Log lines leave in blocks; warnings and errors leave at once."""

from __future__ import annotations

import io
from pathlib import Path

from medrobotics.logs import Lines


def test_info_lines_wait_for_a_flush_and_warnings_flush_everything(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    with path.open("wb", buffering=0) as raw:
        out = io.BufferedWriter(raw, buffer_size=1 << 16)
        lines = Lines(out)
        lines.info('{"event":"request"}')
        lines.debug('{"event":"detail"}')
        assert path.read_bytes() == b""  # buffered: no write per line
        lines.error('{"event":"failed"}')
        assert path.read_bytes().splitlines() == [
            b'{"event":"request"}',
            b'{"event":"detail"}',
            b'{"event":"failed"}',
        ]
        lines.info('{"event":"later"}')
        out.flush()
        assert path.read_bytes().endswith(b'{"event":"later"}\n')
