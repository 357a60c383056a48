"""The report is replaced whole: a writer that dies mid-write leaves the previous report for readers."""

import json
import multiprocessing
import os
import signal
import time

from modelgate.reporting import atomic_write


def _write_forever(path):
    for count in range(10**9):
        atomic_write.write_text(path, json.dumps({"count": count, "padding": "x" * 200_000}))


def test_a_writer_killed_mid_write_leaves_a_whole_file(tmp_path):
    path = tmp_path / "report.json"
    atomic_write.write_text(path, json.dumps({"count": -1}))
    writer = multiprocessing.get_context("spawn").Process(target=_write_forever, args=(path,))
    writer.start()
    try:
        count, deadline = -1, time.monotonic() + 60
        while count < 50 and time.monotonic() < deadline:  # every read during the writes finds a whole document
            count = json.loads(path.read_text())["count"]
        assert count >= 50, "the writer never got going"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
    json.loads(path.read_text())


def test_a_failed_write_keeps_the_old_text_and_no_partial_file(tmp_path):
    path = tmp_path / "report.json"
    atomic_write.write_text(path, "old")
    try:
        atomic_write.write_text(path, b"not text")
    except TypeError:
        pass
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
