"""Starting and stopping `tandem serve` for the tests: a free loopback port (--port 0, read back from the
start-up line), /health polled until 200, the process ended (SIGTERM, then SIGKILL) at the end."""
import json
import re
import subprocess
import time
import urllib.error
import urllib.request

from conftest import TANDEM


class Server:
    def __init__(self, model, *flags, timeout=120):
        self.proc = subprocess.Popen([str(TANDEM), "serve", "-m", str(model), "--port", "0", "-t", "2", *map(str, flags)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        deadline = time.time() + timeout
        self.port = None
        while self.port is None:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"tandem serve exited ({self.proc.wait()}): {''.join(self.log)}")
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            assert time.time() < deadline, "no listening line"
        self.url = f"http://127.0.0.1:{self.port}"
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"tandem serve exited ({self.proc.wait()}): {''.join(self.log)}")
            self.log.append(line)
            if "ready on" in line:
                break
            assert time.time() < deadline, "not ready in time"
        # Keep reading stderr so the server never blocks on a full pipe (--log-level debug writes a lot).
        import threading
        threading.Thread(target=lambda: [self.log.append(l) for l in self.proc.stderr], daemon=True).start()

    def request(self, method, path, body=None, headers=None, raw=None, timeout=60):
        """(status, parsed JSON or text) of one request; never raises for an HTTP error status."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
