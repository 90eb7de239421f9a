"""Nothing a user saved is lost: writers killed (SIGKILL) at random moments, again and again."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.core.data.curated import CuratedSet

TRIALS = 50
# the writer imports the package of this checkout, not the one the environment's install points at
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

WRITER = textwrap.dedent('''
    import sys, numpy as np, pandas as pd
    from napari_yeast_phenotypes.core.data.curated import CuratedSet
    from napari_yeast_phenotypes.core.results.export import write_csv
    root, csv, trial = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cs = CuratedSet(root)
    rng = np.random.default_rng(trial)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        n = 3
        rows = pd.DataFrame({"frame": np.full(n, trial * 10000 + i), "label": np.arange(n) + 1,
                             "phenotype": ["Nuclear", "Triple", "Senescent"], "split": "train",
                             "experiment": "e", "source": "m.tif", "track_id": 1})
        cs.add(rng.random((n, 1, 40, 40), dtype=np.float32), rows)
        if len(cs) > 3:
            cs.relabel(cs.manifest["crop_id"].iloc[-4], ["Circular", "Aggregate"][i % 2])
        # a table of 2000 rows in which every row carries the same version number
        write_csv(pd.DataFrame({"version": np.full(2000, i), "value": np.arange(2000)}), csv)
''')


@pytest.mark.slow
def test_killed_writers_never_leave_broken_files(tmp_path):
    root = tmp_path / "set"
    csv = tmp_path / "cells.csv"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(0)
    killed_mid_write = 0
    for trial in range(TRIALS):
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(csv), str(trial)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_mid_write += proc.returncode == -signal.SIGKILL
        # the manifest is whole and every crop it names is there
        cs = CuratedSet(root)
        for rel in cs.manifest["path"]:
            assert (root / rel).is_file()
        assert not cs.manifest.duplicated("crop_id").any()
        # the CSV is one whole version, never a mix or a cut
        if csv.exists():
            df = pd.read_csv(csv)
            assert len(df) == 2000 and df["version"].nunique() == 1
            assert (df["value"].to_numpy() == np.arange(2000)).all()
        # no crop file outside the manifest is left in the class folders
        named = set(cs.manifest["path"])
        assert all(p.relative_to(root).as_posix() in named for p in root.glob("*/*/*.tif"))
    assert killed_mid_write == TRIALS
    assert len(CuratedSet(root)) > 0
