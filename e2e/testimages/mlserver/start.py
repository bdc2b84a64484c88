"""Start MLServer on the repository of this release: MODEL_BROKEN=1 serves the broken runtime.

MLServer reads settings.json from the repository's root (loopback on 9000, gRPC 9001, metrics 9002,
its metrics and environments under /tmp, the one writable path); the signals proxy takes the pod's ports."""

import os
import shutil

repo = "/srv/broken" if os.environ.get("MODEL_BROKEN") == "1" else "/srv/good"
os.chdir(repo)
os.execv(shutil.which("mlserver") or "/opt/mlserver/bin/mlserver", ["mlserver", "start", repo])
