"""The README says what is true: its numbers are those of the JSON they come from, its links lead somewhere,
its commands and options exist, its key table is the dock's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BENCH = ROOT / "benchmarks"


def _json(name: str) -> dict:
    return json.loads((BENCH / name).read_text(encoding="utf-8"))


def _said(text: str) -> None:
    assert text in " ".join(README.split()), f"the README should say {text!r} (from the benchmarks' JSON)"


# --- numbers -------------------------------------------------------------------------------------------------

def test_the_demo_figure_is_the_seeds_json():
    d = _json("results-demo-seeds.json")
    acc = d["accuracy"]
    assert len(d["runs"]) == len(d["seeds"]) >= 3
    _said(f"{acc['mean']:.3f} ± {acc['sd']:.3f} (mean ± sd of {len(d['runs'])} seeds; from "
          f"{acc['min']:.3f} to {acc['max']:.3f})")


def test_the_real_movie_figures_are_the_real_cells_json():
    j = _json("results-real-cells.json")["judge"]
    _said(f"with {j['n_train']} labels given by eye")
    _said(f"judged on {j['n_judge']} cell-frames")
    _said(f"on {j['per_frame']['agreement']:.3f} of them per frame and {j['smoothed']['agreement']:.3f} after")
    _said(f"would agree on {j['majority_baseline']['agreement']:.3f}")
    _said(f"the demo model unchanged on {j['demo_model_unchanged']['agreement']:.3f}")


def test_the_gfp_figures_are_the_real_cells_json():
    r = _json("results-real-cells.json")
    head = r["choice"]["head"]
    task = r["gfp"]["demo"]["mito_vs_AAH1_AAP1"]["heads"][head]
    for n in ("5", "50"):
        _said(f"{task[n]['accuracy_mean']:.3f} ± {task[n]['accuracy_sd']:.3f} with {n} labels per class")


def test_the_ood_figures_are_the_real_cells_json():
    movies = _json("results-real-cells.json")["ood"]["movies"]
    sim = [m["v1"]["share"] for name, m in movies.items() if name.startswith("simulated_seed")]
    assert len(sim) == 10
    _said(f"flags {100 * movies['real_fluorescence']['v1']['share']:.0f}% of the real movie's cell-frames")
    _said(f"at most {100 * max(sim):.1f}% of any of ten fresh simulated movies")


def test_the_live_update_times_are_the_live_head_json():
    d = _json("results-live-head.json")
    _said(f"re-smoothed ({d['real']['at_500']['median_s']:.1f} s for {d['real']['cell_frames']:,} cell-frames with "
          f"{d['real']['at_500']['labels']} labels, {d['synthetic']['at_500']['median_s']:.1f} s for "
          f"{d['synthetic']['cell_frames']:,} cell-frames")


# --- links, commands, keys -----------------------------------------------------------------------------------

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_picture_exists(doc):
    text = doc.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = [t for t in targets if not re.match(r"[a-z]+:", t)
               and not (doc.parent / t.split("#")[0]).exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def test_the_two_commands_are_as_ci_runs_them():
    assert "bash scripts/setup.sh && .venv/bin/yeast-phenotypes demo --out demo_out" in README
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest\n" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in ci and "scripts/setup.sh" in ci


def _synopsis() -> dict[str, set[str]]:
    """Subcommand -> the options the README's synopsis writes for it."""
    block = README.split("## The command line", 1)[1].split("```", 2)[1]
    out: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        m = re.match(r"yeast-phenotypes (\S+)", line)
        if m:
            command = m.group(1)
            out[command] = set()
        if command:
            out[command] |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line))
    return out


def test_the_synopsis_names_every_command_and_only_real_options():
    from napari_yeast_phenotypes.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    synopsis = _synopsis()
    assert set(synopsis) == set(sub.choices), "the README's synopsis and the command line differ in commands"
    for command, options in synopsis.items():
        real = {s for a in sub.choices[command]._actions for s in a.option_strings}
        assert options <= real, f"{command}: the README names options it does not have: {options - real}"


def test_the_key_table_is_the_docks():
    pytest.importorskip("qtpy")
    from napari_yeast_phenotypes._napari._annotate_keys import KeyBindings
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    class Dock:  # what KeyBindings calls; nothing is pressed here
        apply = next_cell = undo = redo = staticmethod(lambda *a, **k: None)

    bound = set(KeyBindings(Dock()).actions(CLASS_NAMES)) | {f"Shift-{i + 1}" for i in range(len(CLASS_NAMES))}
    table = README.split("| key | what it does |", 1)[1].split("\n\n", 1)[0]
    written = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, flags=re.M):
        for key in re.findall(r"`([^`]+)`", cell):
            written.add(key.replace("Ctrl", "Control").replace("+", "-"))
    written = {k for k in written if "…" not in k} | (
        {str(i + 1) for i in range(len(CLASS_NAMES))} if "`1`…`8`" in table else set()) | (
        {f"Shift-{i + 1}" for i in range(len(CLASS_NAMES))} if "`Shift+1`…`Shift+8`" in table else set())
    assert written == bound, f"README keys {sorted(written)} vs the dock's {sorted(bound)}"


def test_the_class_table_is_the_packages():
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    rows = re.findall(r"^\| (\d) \| (\w+) \|", README, flags=re.M)
    assert [name for _, name in rows] == list(CLASS_NAMES)
    assert [int(k) for k, _ in rows] == list(range(1, len(CLASS_NAMES) + 1))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_module_paths_named_in_the_docs_exist(doc):
    pkg = ROOT / "src" / "napari_yeast_phenotypes"
    named = set(re.findall(r"(?<![\w/])((?:core|_napari)/[\w/]+\.py)", doc.read_text(encoding="utf-8")))
    missing = sorted(p for p in named if not (pkg / p).exists())
    assert not missing, f"{doc.name} names modules that are not there (moved?): {missing}"
