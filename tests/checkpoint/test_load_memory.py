"""Loading a float32 checkpoint into bfloat16 needs about the bfloat16 model's memory, not the float32 one's."""

import subprocess
import sys
from pathlib import Path

import pytest

import xlstm_engine as xe

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")

CONFIG = dict(embedding_dim=512, num_heads=4, num_blocks=12, vocab_size=4096)

# In a fresh process: sample anonymous memory (the page cache of the mmapped file does not count) while loading
PROBE = """
import sys, threading, time, torch, xlstm_engine as xe

def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

peak, done = [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.0005)

with torch.device("meta"):  # one-time library set-up (about 75 MiB) is not the loader's
    xe.xLSTMLarge(xe.xLSTMLargeConfig(**xe.PRESETS["tiny"]))
base = rss_anon()
thread = threading.Thread(target=sample)
thread.start()
model = xe.xLSTMLarge.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
done.set()
thread.join()
print(max(peak[0], rss_anon()) - base, sum(p.numel() * p.element_size() for p in model.parameters()))
"""


def test_float32_into_bfloat16_peak_memory(tmp_path):
    xe.xLSTMLarge(xe.xLSTMLargeConfig(**CONFIG)).save_pretrained(tmp_path)  # float32 on disk
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, check=True)
    peak, model_bytes = map(int, out.stdout.split())
    # float32 weights in memory would add 2x model_bytes; one tensor at a time adds a few MB
    assert peak < 1.25 * model_bytes, f"peak {peak / 2**20:.0f} MiB for a {model_bytes / 2**20:.0f} MiB model"
