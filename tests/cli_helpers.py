"""Running the CLI in-process from tests, and the one-line error contract they check."""

from __future__ import annotations

from atfr.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``atfr ARGV`` in this process: (exit code, stdout, stderr)."""
    rc = main(list(map(str, argv)))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(rc: int, err: str, expect_rc: int = 2, match: str | None = None) -> str:
    """Bad input ends with exactly one stderr line, no traceback, and the documented exit code."""
    assert rc == expect_rc, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    if match:
        assert match in lines[0], lines[0]
    return lines[0]
