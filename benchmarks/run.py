"""How fast does napari-yeast-phenotypes classify, next to what the hardware can do?

Run ``python benchmarks/run.py`` (add ``--out FILE`` for the figures as JSON, ``--quick`` for tiny
sizes, ``--threads N`` to pin torch's thread count, ``--only``/``--skip`` to choose sections).
Everything is measured in this one run on this one machine, so the ratios compare like with like.
One module per section in ``benchmarks/sections/`` (what each figure means: benchmarks/README.md):

- ``machine``: the machine's fp32 rate (the best of a large GEMM and a large 1x1 convolution) and
  the model's FLOPs per crop, which give the ceiling in crops/s;
- ``end_to_end``: ``pipeline.analyse`` on a synthetic movie against a notebook-style loop, at three
  movie lengths (time per crop must not grow with length);
- ``crop_extraction``, ``inference`` (batch sizes, precisions, thread counts), ``training``;
- ``memory``: peak RSS classifying a 100- and a 1,000-frame 512x512 movie streamed from disk;
- ``stall``: the longest stall of a Qt event loop while a napari ``thread_worker`` classifies, and
  while the Train dock trains in its worker;
- ``bf16``: bf16 against fp32 on a trained model;
- ``viewer_memory``: peak RSS of a napari viewer showing the result of a 100- and a 1,000-frame
  movie while the time slider moves;
- ``cores``: the network alone and the movie end to end on 1, 2 and all CPUs;
- ``startup``: how long ``classify`` takes to reach its first frames in a fresh process;
- ``output``: what writing the result of a 40,000 cell-frame movie costs, against its run;
- ``finetune``: one fine-tune of ~100 crops x 3 epochs through the training job, with the defaults (small data:
  200 steps) and as asked (3 epochs);
- ``cuda`` (``--device cuda`` only): the network alone per precision and layout on the GPU, and the
  40,000 cell-frame movie end to end, with their ratio.

Speed does not depend on the weights, so a randomly initialised ``YeastResNet(8)`` in eval mode
stands in for a trained model everywhere except in the bf16 agreement check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sections package sits next to this script
    sys.path.insert(0, str(HERE))

from sections.common import Context  # noqa: E402

# sizes: (full, quick)
SIZES = {
    "full": {"movie": (48, 512, 200), "lengths": (12, 24, 48), "baseline_cells": 400, "crop_frames": 8,
             "loop_frames": 2, "infer_crops": 1024, "batch_sizes": (16, 32, 64, 128, 256), "train_steps": 9,
             "train_batch": 64, "memory": (100, 1000, 512, 10), "stall": (40, 256, 30), "peak_n": 2048,
             "stall_train": (6, 192, 16, 2, 16),
             "bf16_frames": 40, "viewer_memory": (100, 1000, 512, 10, 8),
             "cores_movie": (24, 512, 200), "startup": (24, 512, 134, 3), "output": (134, 300),
             "cuda_batches": (1024, 4096, 16384), "cuda_net_crops": 32768, "cuda_reps": 3,
             "cuda_movie": (300, 512, 134), "cuda_chunks": (8, 32)},
    "quick": {"movie": (6, 128, 12), "lengths": (2, 3, 6), "baseline_cells": 10, "crop_frames": 2,
              "loop_frames": 1, "infer_crops": 64, "batch_sizes": (16, 32), "train_steps": 1, "train_batch": 8,
              "memory": (4, 12, 128, 3), "stall": (4, 128, 6), "stall_train": (2, 128, 8, 1, 4), "peak_n": 256,
              "bf16_frames": 2,
              "viewer_memory": (4, 12, 128, 3, 3),
              "cores_movie": (3, 128, 8), "startup": (3, 128, 6, 1), "output": (10, 20),
              "cuda_batches": (256,), "cuda_net_crops": 512, "cuda_reps": 1, "cuda_movie": (4, 128, 6),
              "cuda_chunks": (8,)},
}

# the modules of benchmarks/sections/, in order: a section may need what an earlier one left in the
# context (movie, model, crops). Imported when run, so a child process loads only its own section
# (the viewer's memory must not count torch).
SECTIONS = ("machine", "end_to_end", "crop_extraction", "inference", "training", "memory", "stall", "bf16",
            "viewer_memory", "cores", "startup", "finetune", "cuda", "output")
NEEDS = {"end_to_end": {"machine"}, "crop_extraction": {"end_to_end"}, "inference": {"machine", "end_to_end"},
         "training": {"machine"}}
OPTIONAL = ("memory", "stall", "bf16", "training", "viewer_memory", "cores", "startup", "finetune", "output")
#: what --device cuda runs (the GPU's own sections; the CPU's are left out)
CUDA_SECTIONS = ("cuda", "startup", "output")


def chosen_sections(only: str, skip: str, device: str = "cpu") -> list[str]:
    """The sections to run, in order: ``only`` (plus what they need) minus ``skip``; on ``cuda`` the GPU's."""
    only_set, skip_set = ({x.strip() for x in s.split(",") if x.strip()} for s in (only, skip))
    unknown = (only_set | skip_set) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(sorted(unknown))}; sections: {', '.join(SECTIONS)}")
    every = set(CUDA_SECTIONS) if device == "cuda" else set(SECTIONS) - {"cuda"}
    wanted = set(only_set) if only_set else every
    while True:  # add what the wanted sections need
        more = set().union(*(NEEDS.get(s, set()) for s in wanted)) - wanted
        if not more:
            break
        wanted |= more
    return [s for s in SECTIONS if s in wanted and s not in skip_set]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the figures to this JSON file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs (seconds)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default, the physical cores)")
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip, e.g. {','.join(OPTIONAL)}")
    ap.add_argument("--only", default="", help="comma-separated sections to run (plus those they need), "
                                               f"from: {', '.join(SECTIONS)}")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cpu (default): the CPU sections; cuda: the network alone per precision and layout on the "
                         "GPU and a 40,000 cell-frame movie end to end, with start-up and output "
                         f"({', '.join(CUDA_SECTIONS)})")
    ap.add_argument("--child", nargs=2, metavar=("SECTION", "ARGS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # a section's fresh process: one JSON line on stdout
        name, child_args = args.child
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        child = importlib.import_module(f"sections.{name}").child
        print(json.dumps(child(json.loads(child_args)), default=float))
        return {}
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device cuda: PyTorch {torch.__version__} sees no CUDA GPU on this machine "
                 f"({'a CPU-only build' if torch.version.cuda is None else f'built for CUDA {torch.version.cuda}'}"
                 "); run without --device for the CPU benchmark, or on a machine with an NVIDIA GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    from sections import machine
    names = chosen_sections(args.only, args.skip, args.device)
    mode = "quick" if args.quick else "full"
    ctx = Context(sizes=SIZES[mode], quick=args.quick, device=args.device)
    t_start = time.perf_counter()
    res: dict = {"mode": mode, "device": args.device, "machine": machine.machine_info(), "notes": ctx.notes}
    for name in names:
        res.update(importlib.import_module(f"sections.{name}").run(ctx))
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["benchmark_seconds"] = time.perf_counter() - t_start
    print_summary(res)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    return res


def print_summary(res: dict) -> None:
    m = res["machine"]
    lines: list[str] = []
    add = lines.append
    add(f"machine: {m['cpu']}, {m['usable_cpus']} cpus, torch {m['torch']} ({m['torch_threads']} threads), "
        f"load {m['load_average_start'][0]:.2f} -> {m['load_average_end'][0]:.2f}")
    if "peak" in res:
        p = res["peak"]
        add(f"fp32 peak: GEMM {p['gemm_gflops']:.0f} GFLOP/s, 1x1 conv {p['conv1x1_gflops']:.0f} GFLOP/s; "
            f"{res['model_gflops_per_crop']:.3f} GFLOP/crop -> ceiling {res['ceiling_crops_per_s']:.0f} crops/s "
            f"(bf16 1x1 conv {p['bf16_conv1x1_gflops']:.0f} GFLOP/s -> {res['bf16_ceiling_crops_per_s']:.0f} "
            "crops/s)")
    if "project_crops_per_s" in res:
        inf = res["project_inference"] or {"path": "?", "precision": "?"}
        add(f"project end to end ({inf['path']}, {inf['precision']}): {res['project_crops_per_s']:.0f} crops/s = "
            f"{res['percent_of_ceiling']:.0f}% of the fp32 ceiling, {res['speedup_vs_baseline']:.1f}x the notebook "
            f"baseline ({res['baseline_crops_per_s']:.1f} crops/s)"
            + (f"; {res['percent_of_bf16_ceiling']:.0f}% of the bf16 ceiling" if "percent_of_bf16_ceiling" in res
               else ""))
        add(f"project end to end in fp32: {res['project_fp32_crops_per_s']:.0f} crops/s = "
            f"{res['percent_of_ceiling_fp32']:.0f}% of the ceiling, {res['speedup_vs_baseline_fp32']:.1f}x the "
            "baseline")
        add("time per crop (ms) by movie length in frames: "
            + ", ".join(f"{k}: {v:.3f}" for k, v in res["time_per_crop_ms_by_frames"].items()))
    if "crop_extraction" in res:
        ce = res["crop_extraction"]
        add(f"crop extraction: {ce['project_crops_per_s']:.0f} vs {ce['loop_crops_per_s']:.0f} crops/s per-label "
            f"loop ({res['crop_extraction_speedup']:.1f}x)")
    if "inference_only" in res:
        inf_only = res["inference_only"]
        for prec in ("fp32", "bf16"):
            if prec in inf_only:
                add(f"inference alone, {prec}, crops/s by batch size: "
                    + ", ".join(f"{k}: {v:.0f}" for k, v in inf_only[prec]["crops_per_s_by_batch_size"].items()))
        add("inference alone, plain eager fp32, by batch size: "
            + ", ".join(f"{k}: {v:.0f}" for k, v in inf_only["eager_fp32_crops_per_s_by_batch_size"].items()))
        add("inference alone, fp32, by threads: "
            + ", ".join(f"{k}: {v:.0f}" for k, v in res["inference_threads_crops_per_s"].items()))
    if "training" in res:
        peak = res.get("training_peak_gflops", {}).get("used")
        add("training" + (f" (peak {peak:.0f} GFLOP/s)" if peak else "") + ": "
            + ", ".join(f"{k}: {v['crops_per_s']:.0f} crops/s ({v['percent_of_ceiling']:.0f}% of its ceiling)"
                        for k, v in res["training"].items()))
    if "memory" in res:
        mem = res["memory"]
        line = (f"peak RSS ({mem['frame_size']}x{mem['frame_size']}, {mem['cells_per_frame']} cells/frame): "
                f"{mem['small']['frames']} frames {mem['small']['peak_rss_mb']:.0f} MB, {mem['large']['frames']} "
                f"frames {mem['large']['peak_rss_mb']:.0f} MB ({mem['source']}, "
                f"{mem['large']['crops'] / mem['large']['seconds']:.0f} crops/s)")
        if "large_memmap" in mem:
            mm = mem["large_memmap"]
            line += (f"; memory-mapped TIFF, {mm['frames']} frames {mm['peak_rss_mb']:.0f} MB "
                     f"({mm['crops'] / mm['seconds']:.0f} crops/s)")
        add(line)
    if "event_loop" in res:
        st = res["event_loop"]
        add("event loop: " + (st["skipped"] if "skipped" in st else
                              f"max stall {st['max_gap_ms']:.1f} ms, p99 {st['p99_gap_ms']:.1f} ms "
                              f"(idle max {st['idle_max_gap_ms']:.1f} ms)"))
    if "event_loop_training" in res:
        st = res["event_loop_training"]
        add("event loop while the Train dock trains: " + (
            st["skipped"] if "skipped" in st else st["error"] if st.get("error") else
            f"max stall {st['max_gap_ms']:.1f} ms, p99 {st['p99_gap_ms']:.1f} ms (idle max "
            f"{st['idle_max_gap_ms']:.1f} ms; {st['train_crops']} crops x {st['epochs']} epochs, "
            f"{st['seconds']:.0f} s)"
            + (f"; before the first batch, while the worker imports torch (once per session): max "
               f"{st['import_phase']['max_gap_ms']:.0f} ms" if st.get("import_phase") else "")))
    if "bf16" in res:
        b = res["bf16"]
        add(f"bf16 vs fp32 ({b['model']}): top class agrees on {100 * b['agreement']:.2f}% of {b['crops']} crops, "
            f"max prob diff {b['max_abs_prob_diff']:.3f}; {b['bf16_crops_per_s']:.0f} vs {b['fp32_crops_per_s']:.0f} "
            "crops/s")
    if "viewer_memory" in res:
        vm = res["viewer_memory"]
        if "skipped" in vm:
            add("viewer memory: skipped: " + vm["skipped"])
        else:
            parts = [f"{r['frames']} frames: peak {r['peak_rss_mb']:.0f} MB, overlays +{r['overlay_mb']:.0f} MB "
                     f"(a (T,Y,X) overlay would be {r['eager_overlay_mb']:.0f} MB), cell table {r['table_mb']:.1f} MB"
                     for r in (vm["small"], vm["large"])]
            add(f"viewer memory ({vm['frame_size']}x{vm['frame_size']}, {vm['cells_per_frame']} cells/frame, "
                f"lazy movie): " + "; ".join(parts) + f"; the longer movie adds {vm['overlay_growth_mb']:.1f} MB "
                f"to the overlays = {vm['overlay_growth_in_frames']:.1f} painted frames of "
                f"{vm['large']['painted_frame_mb']:.2f} MB")
    if "cores" in res:
        c = res["cores"]
        add("every core (network alone -> end to end, cell-frames/s): " + "; ".join(
            f"{k} cpu(s): {v['network_crops_per_s']:.0f} -> {v['end_to_end_crops_per_s']:.0f} "
            f"({v['percent_of_network']:.0f}%, crop_workers {v['default_crop_workers']}; by crop_workers "
            + ", ".join(f"{w}: {r:.0f}" for w, r in v["end_to_end_crops_per_s_by_crop_workers"].items())
            + "; tables and crops alone by crop_workers "
            + ", ".join(f"{w}: {r:.0f}" for w, r in v["tables_and_crops_per_s_by_crop_workers"].items()) + ")"
            for k, v in c["by_cpus"].items()))
    if "startup" in res:
        st = res["startup"]
        add(f"start-up of classify ({st['device']}): first chunk of frames done {st['warm']['first_chunk']:.2f} s "
            f"after the process started (ready to read frame 0 at {st['warm']['ready']:.2f} s, whole command "
            f"{st['warm']['end']:.2f} s; the first run on this machine: {st['cold']['first_chunk']:.2f} s); "
            f"imports of the classify path {st['imports']['import_s']:.2f} s")
    if "output" in res:
        o = res["output"]
        add(f"writing a result of {o['cell_frames']} cell-frames: {o['write_s']:.2f} s (tables {o['tables_s']:.2f} s, "
            f"summary.png {o['summary_png_s']:.2f} s, plotting imports {o['imports_s']:.2f} s)"
            + (f" = {o['percent_of_run']:.1f}% of its run at {o['end_to_end_crops_per_s']:.0f} cell-frames/s "
               f"({o['percent_of_run_without_imports']:.1f}% with the imports done during the run)"
               if "percent_of_run" in o else ""))
    for key in ("finetune", "finetune_as_asked"):
        if key not in res:
            continue
        f = res[key]
        add(f"fine-tune of {sum(f['train_crops'].values())} crops, {f['epochs']} epochs asked, small_data="
            f"{f.get('small_data', 'auto')} ({f.get('steps', '?')} optimiser steps, "
            f"{f.get('epochs_judged', '?')} epochs judged) through the training job: {f['seconds']:.1f} s "
            f"({f['torch_threads']} threads; imports before it {f['imports_s']:.1f} s); CPU s by part: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(f["cpu_s_by_part"].items(), key=lambda x: -x[1])))
    if "cuda" in res:
        g = res["cuda"]
        add(f"GPU: {g['gpu']}, CUDA {g['cuda']}, {g['gpu_memory_gb']:.0f} GB")
        for name, rates in g["network_crops_per_s"].items():
            add(f"  network alone, {name}, crops/s by batch size: "
                + ", ".join(f"{k}: {v:.0f}" for k, v in rates.items()))
        e = g["end_to_end"]
        add(f"  end to end ({e['movie'][0]} frames {e['movie'][1]}x{e['movie'][1]}): best {e['crops_per_s']:.0f} "
            f"cell-frames/s (crop_workers {e['best']['crop_workers']}, chunk {e['best']['chunk_frames']}), default "
            f"{e['default_crops_per_s']:.0f}; with the result folder written {e['with_result_folder_s']:.1f} s")
        add(f"  end to end / network alone (ceiling {g['ceiling_crops_per_s']:.0f} crops/s): "
            f"{g['percent_of_ceiling']:.1f}% (default settings {g['default_percent_of_ceiling']:.1f}%)")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
