"""The demo's email_service receiver prints what the sidecar's sink sends (real process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from tests.support.processes import REPO, free_port


def test_prints_each_alert_it_receives() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "scripts/email_receiver.py", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/send"
        alert = {"id": 4, "type": "alert", "severity": "critical", "title": "T", "message": "M"}
        deadline = time.monotonic() + 15
        while True:
            try:
                request = urllib.request.Request(url, data=json.dumps(alert).encode())
                with urllib.request.urlopen(request, timeout=1) as response:
                    assert response.status == 202
                break
            except OSError:
                assert time.monotonic() < deadline, "the receiver never answered"
                time.sleep(0.05)
        request = urllib.request.Request(url, data=b"not json")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert "email_service /send: #4 critical: T - M" in output
    assert "8 bytes: b'not json'" in output
