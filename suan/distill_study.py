"""``suan distill-study``: the paper's distillation claim tested at a fair budget.

The claim (SPEC section 5): a LightSUAN trained with online distillation from a bigger SUAN
beats a SUAN one grade above the student. For each student grade and each teacher ``k`` grades
above it, lambda x T is picked on seed 0's validation AUC (the test split is only evaluated), then
the chosen setting is trained on every seed. References on the same seeds and budget: LightSUAN
alone at the student's grade and SUAN one grade above it. Every run is a ``suan compare`` entry
(``lightsuan-distilled~tg2~lam1~T2@g0``, ``lightsuan@g0``, ``suan@g1``) trained by the same code,
kept as ``OUT/results/<run>.json``: a rerun skips finished runs, and pointing ``--out`` at a
comparison's folder with the same settings reuses its runs.

Output: ``OUT/distill.json`` and ``OUT/distill.md`` (one table per student: mean +- std over seeds,
a paired test of each distilled student against SUAN one grade up, and the validation grid).

``references_only`` trains just the references on every seed and writes ``OUT/references.json`` /
``OUT/references.md`` (no claim, no grid): a long study can then be split across sessions or
machines, and the full study run later on the same ``--out`` skips them.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .compare import _run_all, paired_test, summarize_runs
from .config import GRADES, get_grade
from .defaults import DISTILL_STUDY_PRESETS, DistillStudyPreset, preset as choose_preset
from .io import write_json, write_text
from .rundir import RunLock
from .train import open_data
from .workers import check_jobs, check_threads


def _short(grade: str) -> str:
    return get_grade(grade).name.split("-")[0]


def grades_up(grade: str, steps: int) -> Optional[str]:
    """The grade ``steps`` above ``grade`` (``g0``, 2 -> ``g2``), or None past the largest."""
    names = [g.name for g in GRADES]
    i = names.index(get_grade(grade).name) + steps
    return names[i].split("-")[0] if 0 <= i < len(names) else None


def distilled_entry(student: str, teacher: str, lam: float, temperature: float) -> str:
    return f"lightsuan-distilled~t{teacher}~lam{lam:g}~T{temperature:g}@{student}"


def _valid_auc(r: dict) -> float:
    return r["best_valid_auc"] if r.get("best_valid_auc") is not None else r["valid"].get("auc", float("-inf"))


def run_distill_study(out_dir: str, preset: str = "smoke", data: Optional[str] = None,
                      students: Optional[Sequence[str]] = None, teacher_steps: Optional[Sequence[int]] = None,
                      seeds: Optional[Sequence[int]] = None, lambdas: Optional[Sequence[float]] = None,
                      temperatures: Optional[Sequence[float]] = None, data_dir: Optional[str] = None,
                      progress: bool = False, jobs: int = 1, references_only: bool = False,
                      threads: Optional[int] = None) -> dict:
    """The study of the module docstring; ``jobs`` > 1 trains that many runs at a time, ``threads``
    torch threads each (default: one in a worker, torch's own count with one job)."""
    check_jobs(jobs)
    check_threads(threads)
    sp: DistillStudyPreset = choose_preset(DISTILL_STUDY_PRESETS, preset, "preset")
    cp = sp.compare
    if data:
        cp = dataclasses.replace(cp, data=data)
    if seeds:
        cp = dataclasses.replace(cp, seeds=tuple(seeds))
    if students:
        sp = dataclasses.replace(sp, students=tuple(_short(s) for s in students))
    if teacher_steps:
        if any(not isinstance(k, int) or k < 1 for k in teacher_steps):
            raise ValueError(f"teacher-steps: grades above the student, each >= 1; got {list(teacher_steps)}")
        sp = dataclasses.replace(sp, teacher_steps=tuple(teacher_steps))
    for name, values in (("lambdas", lambdas), ("temperatures", temperatures)):
        if values:
            if any(not (isinstance(v, (int, float)) and 0 < v < float("inf")) for v in values):
                raise ValueError(f"{name}: positive numbers; got {list(values)}")
            sp = dataclasses.replace(sp, **{name: tuple(float(v) for v in values)})
    if len(cp.lr_grid) != 1:
        raise ValueError("preset: a distillation study trains every run at one learning rate")
    with RunLock(out_dir, "out"):
        return _run_study(sp, cp, preset, out_dir, data_dir, progress, jobs, references_only, threads)


def _run_study(sp: DistillStudyPreset, cp, preset: str, out_dir: str, data_dir: Optional[str], progress: bool,
               jobs: int, references_only: bool = False, threads: Optional[int] = None) -> dict:
    t0 = time.perf_counter()
    store = open_data(cp.data, data_dir, 0)
    lr, seed0 = cp.lr_grid[0], cp.seeds[0]
    plan: List[Tuple[str, str]] = []  # (student, teacher)
    for student in sp.students:
        for k in sp.teacher_steps:
            teacher = grades_up(student, k)
            if teacher is None:
                print(f"  {student}: no grade {k} above it; skipped", flush=True)
            else:
                plan.append((student, teacher))
    print(f"distill-study on {cp.data}: {store.describe()['samples']} samples; students {list(sp.students)}, "
          f"teachers {list(sp.teacher_steps)} grade(s) up, lambda {list(sp.lambdas)} x T {list(sp.temperatures)} "
          f"on seed {seed0}'s valid AUC, seeds {list(cp.seeds)}, lr {lr:g}, up to {cp.epochs} epoch(s)"
          + ("; references only" if references_only else ""), flush=True)

    def run(entries: Sequence[str], seeds: Sequence[int]) -> Dict[Tuple[str, int], dict]:
        tasks = [(e, lr, s, None) for e in entries for s in seeds]
        done = _run_all(tasks, store, cp, out_dir, data_dir, progress, jobs, threads)
        return {(e, s): r for (e, _, s, _), r in zip(tasks, done)}

    def entry(kind: str, grade: str) -> str:  # the comparison's name for it, so its runs are reused
        return kind if grade == _short(cp.grade) else f"{kind}@{grade}"

    refs = {s: [entry("lightsuan", s)] + ([entry("suan", grades_up(s, 1))] if grades_up(s, 1) else [])
            for s in sp.students}
    if references_only:
        plan, grid, tuned, best = [], {}, {}, {}
    else:
        # phase 1: lambda x T on seed 0 (validation AUC only)
        grid = {pair: [distilled_entry(*pair, lam, t) for lam in sp.lambdas for t in sp.temperatures]
                for pair in plan}
        tuned = run([e for entries in grid.values() for e in entries], [seed0])
        best = {pair: max(entries, key=lambda e: _valid_auc(tuned[(e, seed0)])) for pair, entries in grid.items()}
    # phase 2: every seed for the chosen settings and the references
    entries = list(dict.fromkeys([best[p] for p in plan] + [e for s in sp.students for e in refs[s]]))
    runs = run(entries, cp.seeds)

    def summary(entry: str) -> dict:
        return summarize_runs([runs[(entry, s)] for s in cp.seeds])

    students = {}
    for s in sp.students:
        rows = {e: summary(e) for e in refs[s]}
        suan_up = refs[s][1] if len(refs[s]) > 1 else None
        claims = {}
        for student, teacher in plan:
            if student != s:
                continue
            e = best[(student, teacher)]
            rows[e] = summary(e)
            rows[e]["teacher"] = teacher
            rows[e]["valid_grid"] = {g: _valid_auc(tuned[(g, seed0)]) for g in grid[(student, teacher)]}
            if suan_up:
                t = paired_test(rows[e]["auc"]["values"], rows[suan_up]["auc"]["values"])
                t["against"] = suan_up
                # holds: ahead with p < 0.05 over seeds; not shown: ahead on average only; does not hold
                t["holds"] = bool(t["mean_diff"] > 0 and t.get("p", 1.0) < 0.05)
                t["verdict"] = "holds" if t["holds"] else ("not shown" if t["mean_diff"] > 0 else "does not hold")
                claims[e] = t
            alone = refs[s][0]
            rows[e]["gain_over_alone"] = paired_test(rows[e]["auc"]["values"], rows[alone]["auc"]["values"])
        students[s] = {"rows": rows, "claim": claims}
    report = {"data": cp.data, "preset": preset, "history_rule": store.info.get("history_rule"),
              "samples": store.describe()["samples"], "lr": lr, "seeds": list(cp.seeds),
              "settings": {"compare": {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in dataclasses.asdict(cp).items()},
                           "students": list(sp.students), "teacher_steps": list(sp.teacher_steps),
                           "lambdas": list(sp.lambdas), "temperatures": list(sp.temperatures)},
              "students": students, "references_only": references_only, "wall_time_s": time.perf_counter() - t0}
    name = "references" if references_only else "distill"
    write_json(os.path.join(out_dir, f"{name}.json"), report)
    md = format_study(report)
    write_text(os.path.join(out_dir, f"{name}.md"), md)
    print(md)
    return report


def format_study(report: dict) -> str:
    """``distill.md`` from ``distill.json``."""
    c = report["settings"]["compare"]
    lines = [f"Data `{report['data']}` ({report['samples']['train']:,} train / {report['samples']['test']:,} test "
             f"samples, history rule `{report.get('history_rule')}`); up to {c['epochs']} epoch(s), early stopping "
             f"after {c['early_stopping']} epoch(s) without a better valid AUC, batch {c['batch_size']}, "
             f"L={c['max_len']}, dropout {c['dropout']}, lr {report['lr']:g} for every run, seeds {report['seeds']}; "
             f"lambda x T from {report['settings']['lambdas']} x {report['settings']['temperatures']} by seed "
             f"{report['seeds'][0]}'s valid AUC.", ""]
    pm = "\u00b1"
    for student, st in report["students"].items():
        lines += [f"### Student LightSUAN {student}", "",
                  "| model | teacher | lambda, T | test AUC | GAUC | LogLoss | best epoch | non-emb params "
                  "| train samples/s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in st["rows"].items():
            setting = "-"
            if "teacher" in r:
                lam = name.split("~lam")[1].split("~")[0]
                temp = name.split("~T")[1].split("@")[0]
                setting = f"{lam}, {temp}"
            lines.append(f"| {name} | {r.get('teacher', '-')} | {setting} | {r['auc']['mean']:.4f} {pm} "
                         f"{r['auc']['std']:.4f} | {r['gauc']['mean']:.4f} {pm} {r['gauc']['std']:.4f} | "
                         f"{r['logloss']['mean']:.4f} {pm} {r['logloss']['std']:.4f} | "
                         f"{r['best_epoch']['mean']:.1f} | {r['non_embedding_params']:,} | "
                         f"{r['train_samples_per_s']:.0f} |")
        lines.append("")
        for name, t in st["claim"].items():
            p = f", p={t['p']:.3f} ({t['test']})" if "p" in t else ""
            verdict = t.get("verdict") or ("holds" if t["holds"] else "does not hold")
            verdict = {"not shown": "is not shown (ahead on average, not significantly)"}.get(verdict, verdict)
            gain = st["rows"][name]["gain_over_alone"]["mean_diff"]
            lines.append(f"- {name} vs {t['against']}: test AUC {t['mean_diff']:+.4f} over {t['n']} seeds{p}: "
                         f"the claim **{verdict}** here; distillation vs LightSUAN alone {gain:+.4f} AUC.")
        for name, r in st["rows"].items():
            if "valid_grid" in r:
                cells = ", ".join(f"lam {g.split('~lam')[1].split('~')[0]} T {g.split('~T')[1].split('@')[0]}: "
                                  f"{v:.4f}" for g, v in r["valid_grid"].items())
                lines.append(f"- valid AUC grid (seed {report['seeds'][0]}), teacher {r['teacher']}: {cells}")
        lines.append("")
    lines.append(f"wall time {report['wall_time_s'] / 60:.1f} min")
    return "\n".join(lines) + "\n"
