"""The benchmark's stack with gevent's development server as the web tier instead of Apache.

For machines where Apache and mod_wsgi cannot be installed (the GPU machine: no apt, no
internet). One process, cooperative threads: its CPU per request is not Apache's, so figures
taken with it say what the model server and Redis sustain on that machine, not the web tier.
"""
from __future__ import annotations

from tests.support.harness import VENV_PYTHON, Stack, wait_until  


class GeventStack(Stack):
    """Redis, model servers and `python run_web_server.py` as processes."""

    def start(self, model_servers: int = 1, timeout: float = 120) -> None:
        self.redis.start()
        self.env["REDIS_URL"] = self.redis.url
        for n in range(model_servers):
            self.start_model_server(f"model_server{'' if n == 0 else n}")
        self.spawn("web", [str(VENV_PYTHON), "run_web_server.py"])
        wait_until(self._ready, timeout, f"{self.url}/ready (logs in {self.workdir})")
