"""How a model trained on synthetic cells calls REAL yeast crops (../shared/data/real).

The PCI toy set (Lu et al. 2019): 1,642 GFP crops of five proteins, labelled per protein only.
Mapped onto our classes (a judgement, see its SOURCE.md): AAH1, AAP1, AAR2 are diffuse
cytoplasmic (-> Cytoplasm); AAC1, AAC3 are mitochondrial networks (-> closest: Fragmented).
The crops have no masks, so each whole 64x64 crop is resized to 40x40 and normalised with one
robust range for the whole set (background = median of the crop borders, top = 99th percentile),
as integer crops of an ImageFolder are.

    python benchmarks/real_crops.py --model demo_out/model.pt

This is a check of how far synthetic training carries to real cells, not a benchmark of the
method: a model for real use is trained on a curated set of the lab's own cells.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "real" / "pci-yeast-gfp-crops" / "pci_toy_yeast_crops.npz"
EXPECTED = {"AAH1": "Cytoplasm", "AAP1": "Cytoplasm", "AAR2": "Cytoplasm", "AAC1": "Fragmented", "AAC3": "Fragmented"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"real data not found at {args.data}; nothing to check")
        return 0
    import torch
    import torch.nn.functional as F

    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
    from napari_yeast_phenotypes.core.network.predict import predict_crops

    d = np.load(args.data)
    gfp, protein = d["gfp"].astype(np.float32), d["protein"].astype(str)
    border = np.concatenate([gfp[:, :4].ravel(), gfp[:, -4:].ravel(), gfp[:, :, :4].ravel(), gfp[:, :, -4:].ravel()])
    low, high = float(np.median(border)), float(np.percentile(gfp, 99))
    x = F.interpolate(torch.from_numpy((gfp - low) / (high - low))[:, None], size=(40, 40), mode="bilinear",
                      antialias=True, align_corners=False).numpy()
    clf = load_classifier(args.model)
    pred = np.asarray(clf.class_names)[predict_crops(clf.model, x).argmax(axis=1)]
    print(f"model {args.model}; {len(pred)} real GFP crops")
    print(f"{'protein':<8}{'expected':<12}{'n':>5}  {'as expected':>11}  most common calls")
    for p in sorted(EXPECTED):
        sel = protein == p
        calls, counts = np.unique(pred[sel], return_counts=True)
        top = ", ".join(f"{c} {n / sel.sum():.0%}" for c, n in sorted(zip(calls, counts), key=lambda t: -t[1])[:3])
        print(f"{p:<8}{EXPECTED[p]:<12}{sel.sum():>5}  {np.mean(pred[sel] == EXPECTED[p]):>11.0%}  {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
