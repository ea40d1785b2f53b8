import os
import sys
import tempfile

# tests import their shared helpers (reference.py) by module name
sys.path.insert(0, os.path.dirname(__file__))

# A fresh inductor cache per run: a cached graph keeps the output strides an
# older build's fake kernels promised, which would test the old build.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnkit-inductor-")
