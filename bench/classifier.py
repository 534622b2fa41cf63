#!/usr/bin/env python3
"""Benchmark: the transit classifier on held-out injections, its fitting time and scoring rate.

Stars are synthetic TESS-like sectors (27 days at ``--cadence`` minutes, the
mid-sector gap, white noise of 300-3000 ppm, red noise and spot variability).
Examples are made exactly as ``skyretriever train`` makes them
(:func:`skyretriever.analysis.training.make_examples`: injected transits of S/N
7-20 and periods 0.5-20 days kept when the transit search finds them;
negatives as they are, with flares, dips and eclipsing binaries), split by
star, and both models (``cnn``, ``gbt``) are fitted on the training part and
judged on the test part beside the transit search's SDE.

It prints, per model: AUC, AUPRC, recall at 99% precision (the SDE's too),
the fitting time, and the scoring rate (the analysis' classifier step with the
model read from its file: views made from the stitched light curves and one
model call per source, as in a run, on one thread; per CPU second). With
``--fit-examples N`` it also times the CNN's epochs on N examples (the made
examples repeated with their views flipped and noise added: the cost of an
epoch depends on the number of examples, not on where they came from).

With ``--planets`` it scores real light curves (``bench/real_files.py`` fetches
them) as they are, after the project's own reduction (the mission's
observatory) and transit search: planet hosts (WASP-4 and TOI-216 in TESS,
K2-140 and K2-32 in K2), altaipony's flare stars (TESS, K2, Kepler; no known
planet) and two TESS stars whose status is not known here; per star the best
candidate's period against the known one, its S/N and SDE, and each model's
score against the threshold.

Examples
--------
    .venv/bin/python bench/classifier.py                       # 600 examples of 60 stars
    .venv/bin/python bench/classifier.py -n 2000 --stars 150 --fit-examples 20000
    .venv/bin/python bench/classifier.py --planets --real-files   # and the real stars
    # examples kept with their series, then views with the local view's other parts and
    # a CNN of five networks (the mean of their scores)
    .venv/bin/python bench/classifier.py -n 3000 --stars 600 --examples-file ex.npz
    .venv/bin/python bench/classifier.py --examples-file ex.npz \
        --local-kinds transit,secondary,odd,even --networks 5
    # the README's 14,645 examples: 60 files of 250 examples of 40 stars each, then the
    # models fitted on them, with and without the candidate's duty cycle
    .venv/bin/python bench/classifier.py --make-chunks 101-160 /tmp/ml -n 250 --stars 40 \
        --workers 2
    .venv/bin/python bench/classifier.py --examples-file '/tmp/ml/chunk*.npz' --planets
    .venv/bin/python bench/classifier.py --examples-file '/tmp/ml/chunk*.npz' --numbers snr,sde
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
import time
from collections import Counter

import numpy as np

from skyretriever.analysis import Analysis
from skyretriever.analysis.classifier import TrainingParameters, candidate_numbers, save_model
from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve
from skyretriever.analysis.training import (
    EXAMPLE_ARRAYS,
    Examples,
    evaluate,
    fit_model,
    make_examples,
    split_by_source,
)
from skyretriever.execution import make_examples_in_processes, run_in_processes


def write_examples(made: Examples, path: str) -> None:
    """Keep ``made`` in an .npz file, with each example's searched series when it has them.

    The series (times, flux, and the best candidate's period, epoch and
    duration) let views of other kinds or sizes be made again without searching.
    """
    extra = {}
    if made.series is not None:
        extra = {"series_times": np.concatenate([s[0] for s in made.series]),
                 "series_flux": np.concatenate([s[1] for s in made.series]),
                 "series_lengths": np.array([len(s[0]) for s in made.series]),
                 "series_candidates": np.array([s[2:] for s in made.series], dtype=float)}
    np.savez(path, seconds=made.seconds, dropped=json.dumps(dict(made.dropped)),
             **{key: getattr(made, key) for key in EXAMPLE_ARRAYS}, **extra)


def read_examples(path: str) -> Examples:
    """The examples :func:`write_examples` kept (views remade when the file has the series).

    ``path`` may be a glob (``'chunk*.npz'``): the files' examples are joined
    (their series too when every file has them).
    """
    parts = []
    for name in sorted(glob.glob(path)) or [path]:
        with np.load(name) as saved:
            arrays = {key: saved[key] for key in EXAMPLE_ARRAYS if key in saved.files}
            if "duty_cycle" not in arrays:      # kept before examples had it: from the series
                if "series_candidates" not in saved.files:
                    raise SystemExit(f"{name}: examples kept without their duty cycle or "
                                     "their series; make them again")
                candidates = saved["series_candidates"]     # period, epoch, duration
                arrays["duty_cycle"] = candidates[:, 2] / candidates[:, 0]
            made = Examples(**arrays,
                            seconds=float(saved["seconds"]),
                            dropped=Counter(json.loads(str(saved["dropped"]))
                                            if "dropped" in saved.files else {}))
            if "series_lengths" in saved.files:
                ends = np.cumsum(saved["series_lengths"])
                times = np.split(saved["series_times"], ends[:-1])
                flux = np.split(saved["series_flux"], ends[:-1])
                made.series = [(t, f, *c) for t, f, c in zip(
                    times, flux, saved["series_candidates"].tolist(), strict=True)]
        parts.append(made)
    return Examples.joined(parts)


def make_chunk(seed: int, stars: int, examples: int, cadence: float, folder: str) -> str:
    """One file of examples kept with their series: ``stars`` new stars of ``seed``.

    The stars are named ``s<seed>_star<NNNN>`` (every chunk's its own, so a
    split by star keeps each star in one part) and the examples drawn with the
    same seed; written to ``folder/chunk<seed>.npz``, its path returned.
    """
    analysis = Analysis(finders=["transit"], classifier={"global_bins": 2001, "local_bins": 201})
    made = make_examples(analysis, {f"s{seed}_{name}": frames for name, frames in
                                    make_stars(stars, cadence, analysis, seed=seed).items()},
                         examples, seed=seed, keep_series=True)
    path = os.path.join(folder, f"chunk{seed:03d}.npz")
    write_examples(made, path)
    return path


def remade_views(made: Examples, analysis: Analysis) -> Examples:
    """``made`` with its views made again from its kept series by ``analysis``' classifier.

    Examples whose views cannot be made (none: they were made once) would be dropped.
    """
    rows = [analysis.classifier.views(*series) for series in made.series]
    made.global_views = np.stack([r.global_view for r in rows])
    made.local_views = np.stack([r.local_view for r in rows])
    return made


def errors(test: Examples, scores: np.ndarray) -> str:
    """What a model gets wrong at 99% precision: negatives above, transits below, by kind and S/N."""
    order = np.argsort(-scores, kind="stable")
    labels = test.labels[order]
    precision = np.cumsum(labels) / np.arange(1, len(labels) + 1)
    reachable = np.flatnonzero(precision >= 0.99)
    cut = scores[order][reachable[-1]] if len(reachable) else np.inf
    above = scores >= cut
    wrong = [str(k) for k in test.kinds[(test.labels == 0) & above]]
    missed = test.injected_snr[(test.labels == 1) & ~above]
    bins = np.histogram(missed, bins=[7, 10, 14, 20, 30, 60])[0]
    return (f"at 99% precision (score >= {cut:.3f}): negatives above {dict(Counter(wrong))}; "
            f"transits below {len(missed)} of {int(test.labels.sum())}, by injected S/N "
            f"7-10/10-14/14-20/20-30/30-60: {bins.tolist()}")


def make_stars(count: int, cadence: float, analysis: Analysis, seed: int = 0) -> dict:
    """``count`` quality-checked synthetic sectors by name."""
    rng = np.random.default_rng(seed)
    stars = {}
    for index in range(count):
        frame = sector_lightcurve(rng, cadence_minutes=cadence, mag=rng.uniform(8, 13),
                                  noise_ppm=rng.uniform(300, 3000), red_ppm=100,
                                  variability_ppm=1000, rotation_period=rng.uniform(2, 10))
        stars[f"star{index:04d}"] = [analysis.check_quality(as_lightcurve(frame))[0]]
    return stars


def scoring_rate(analysis: Analysis, model, stars: dict, count: int) -> tuple[float, float]:
    """Candidates scored per CPU second and per second of wall time, as a run scores them.

    The model is written to a model file and read back by an analysis with the
    classifier on; its step (``Analysis.classify``: the views of each source's
    candidates, made from the stitched light curves, and one model call per
    source) is timed on the transit searches of 20 stars, on one thread, in a
    new process (as a run's workers read the model). CPU seconds are the
    figure per core; wall time on a shared machine is longer.
    """
    found = [analysis.finders[0].find_source(frames) for frames in list(stars.values())[:20]]
    found = [f for f in found if any(s.candidate is not None for s in f.searched)]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.zip")
        save_model(model, path, {})
        # in a new process, as a run's workers score (not after a fit in this one)
        calls = [(model.name, path, model.global_bins, model.local_bins,
                  list(model.local_kinds), found, count)]
        return next(run_in_processes(_scoring_rate, calls, 1, start_method="spawn"))[1]


def _scoring_rate(name: str, path: str, global_bins: int, local_bins: int, kinds: list,
                  found: list, count: int) -> tuple[float, float]:
    scoring = Analysis(finders=["transit"], classifier={
        "enabled": True, "model": name, "model_file": path, "global_bins": global_bins,
        "local_bins": local_bins, "local_kinds": kinds})
    scoring.classifier.model()
    scored = 0
    cpu, wall = time.process_time(), time.perf_counter()
    while scored < count:
        for result in found:
            scoring.classify(result)
            scored += sum(s.candidate is not None for s in result.searched)
    return scored / (time.process_time() - cpu), scored / (time.perf_counter() - wall)


def real_stars(analysis: Analysis, planets: bool = False) -> dict:
    """The real mission light curves of the project's test data (``bench/real_files.py``).

    altaipony 2.1.2's files: a TESS 2-minute sector (TIC 358108509), a K2
    campaign (EPIC 211117077) and two Kepler quarters (KIC 10002792, searched
    together); with ``planets``, also the files of
    :data:`~skyretriever.testing.realfiles.PLANET_FILES` (WASP-4, TOI-216,
    K2-140, K2-32 and two TESS stars of unknown status; HAT-P-7 and WASP-126 of
    :data:`~skyretriever.testing.realfiles.ASTROPY_DATA_FILES` when present). Each is read and
    reduced by its mission's observatory as a project reduces a download
    (PDCSAP flux, the default quality mask) and quality-checked by the
    analysis; the stars by name, each with its :class:`RealFile` records.
    """
    from skyretriever.testing.realfiles import (
        ASTROPY_DATA_FILES,
        PLANET_FILES,
        REAL_FILES,
        find_real_files,
        planet_cache,
        real_lightcurves,
    )

    wanted = [(find_real_files(), REAL_FILES)]
    if planets:
        wanted.append((find_real_files(planet_cache(), PLANET_FILES), PLANET_FILES))
        # HAT-P-7 and WASP-126, when `bench/real_files.py --astropy-data` has fetched them
        wanted.append((find_real_files(planet_cache(), ASTROPY_DATA_FILES), ASTROPY_DATA_FILES))
    stars: dict = {}
    for paths, records in wanted:
        by_name = {real.name: real for real in records}
        for path in paths:
            real = by_name[path.name]
            entry = stars.setdefault(real.target, {"frames": [], "files": []})
            for lightcurve in real_lightcurves(path, real):
                entry["frames"].append(analysis.check_quality(lightcurve)[0])
            entry["files"].append(real)
    return stars


def score_planets(analysis: Analysis, models: dict, threshold: float) -> dict:
    """Each real star scored as it is: the search's best candidate against the known period.

    Prints per star the best candidate's period (and the known planets'), S/N,
    SDE, each model's score and whether it is above ``threshold``.
    """
    finder = analysis.finders[0]
    results = {}
    for name, star in real_stars(analysis, planets=True).items():
        real = star["files"][0]
        found = finder.find_source(star["frames"])
        best = max((s for s in found.searched if s.candidate is not None),
                   key=lambda s: s.candidate.snr, default=None)
        entry = {"mission": real.mission, "status": real.status, "files": len(star["files"]),
                 "points": int(sum(len(f) for f in star["frames"])),
                 "known": [{"name": p.name, "period": p.period, "reference": p.reference}
                           for p in real.planets]}
        if best is not None:
            c = best.candidate
            views = analysis.classifier.views(best.times, best.flux, c.period, c.epoch,
                                              c.duration)
            entry.update(period=c.period, epoch=c.epoch, duration_hours=c.duration * 24,
                         depth_ppm=c.depth * 1e6, snr=c.snr, sde=c.sde,
                         transits=c.num_transits)
            for m, model in models.items():
                entry[m] = float(model.scores(views.global_view[None], views.local_view[None],
                                              candidate_numbers([c], model.candidate_numbers))[0])
        results[name] = entry
        known = ", ".join(f"{p['name']} {p['period']:.4f} d" for p in entry["known"]) or "none"
        scores = "  ".join(f"{m} {entry[m]:.3f} ({'above' if entry[m] >= threshold else 'below'})"
                           for m in models if m in entry)
        print(f"{name:<24} {real.mission:<6} {real.status:<15} known: {known:<22} best "
              f"P {entry.get('period', np.nan):8.4f} d  depth {entry.get('depth_ppm', np.nan):7.0f} "
              f"ppm  S/N {entry.get('snr', np.nan):6.1f}  SDE {entry.get('sde', np.nan):5.1f}  "
              f"{scores}")
    return results


def score_real(analysis: Analysis, models: dict, injections: int = 10) -> dict:
    """Scores of the real stars as they are, and with transits injected (S/N 10-20)."""
    from skyretriever.analysis.simulator import Simulator

    stars = real_stars(analysis)
    finder = analysis.finders[0]
    results = {}
    for name, star in stars.items():
        frames = star["frames"]
        span = max(f["mjd"].max() for f in frames) - min(f["mjd"].min() for f in frames)
        simulator = Simulator(events={"transit": 1.0}, transit={
            "period": {"kind": "loguniform", "low": 0.5, "high": min(20.0, span / 3)},
            "snr": [10.0, 20.0]})
        rng = np.random.default_rng(5)
        entry: dict = {"as_it_is": {}, "injected": {m: [] for m in models}, "found": 0}
        searches = [(frames, None)]
        for _ in range(injections):
            event = simulator.draw(frames, rng)
            searches.append((simulator.inject(frames, event), event))
        for injected, event in searches:
            found = finder.find_source(injected)
            best = max((s for s in found.searched if s.candidate is not None),
                       key=lambda s: s.candidate.snr, default=None)
            if best is None:
                continue
            c = best.candidate
            if event is not None and not simulator.match(
                    event, {"period": c.period, "epoch": c.epoch, "duration": c.duration}):
                continue
            views = analysis.classifier.views(best.times, best.flux, c.period, c.epoch,
                                              c.duration)
            scores = {m: float(model.scores(views.global_view[None], views.local_view[None],
                                            candidate_numbers([c], model.candidate_numbers))[0])
                      for m, model in models.items()}
            if event is None:
                entry["as_it_is"] = {"period": c.period, "snr": c.snr, "sde": c.sde, **scores}
            else:
                entry["found"] += 1
                for m, score in scores.items():
                    entry["injected"][m].append(score)
        results[name] = entry
        print(f"{name}: as it is: best candidate P {entry['as_it_is'].get('period', np.nan):.3f} d, "
              f"S/N {entry['as_it_is'].get('snr', np.nan):.1f}, SDE "
              f"{entry['as_it_is'].get('sde', np.nan):.1f}, scores "
              + ", ".join(f"{m} {entry['as_it_is'].get(m, np.nan):.3f}" for m in models)
              + f"; {entry['found']} of {injections} injected transits found, scores "
              + ", ".join(f"{m} median {np.median(v) if v else np.nan:.3f} min "
                          f"{min(v) if v else np.nan:.3f}" for m, v in entry["injected"].items()))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--examples", type=int, default=600)
    parser.add_argument("--stars", type=int, default=60)
    parser.add_argument("--cadence", type=float, default=10.0, help="minutes between epochs")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=TrainingParameters().patience,
                        help="epochs without a better validation loss before the CNN stops")
    parser.add_argument("--fit-examples", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--examples-file", help="keep the examples in this .npz file (and read "
                        "them from it when it exists; a glob joins the files it matches), "
                        "with their searched series, so that views of other parts can be "
                        "made from them")
    parser.add_argument("--only", choices=("gbt", "cnn"), help="fit only this model")
    parser.add_argument("--threads", type=int, default=1, help="threads to fit with")
    parser.add_argument("--workers", type=int, default=1, help="processes making the examples "
                        "(the same examples as one)")
    parser.add_argument("--local-kinds", default="transit", help="parts of the local view, "
                        "comma-separated (transit,secondary,odd,even)")
    parser.add_argument("--weight-average", type=float,
                        default=TrainingParameters().weight_average,
                        help="CNN: decay per step of the moving average of the weights kept")
    parser.add_argument("--numbers", help="the candidate's numbers the models take, "
                        "comma-separated (of snr,sde,duty_cycle; 'none' for none); the "
                        "models' defaults when not given")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fit (the split "
                        "stays that of seed 0)")
    parser.add_argument("--networks", type=int, default=TrainingParameters().networks,
                        help="networks of the CNN (fitted from successive seeds; it scores "
                        "their mean); each one is also judged alone")
    parser.add_argument("--real-files", action="store_true", help="also score the real TESS, "
                        "K2 and Kepler light curves of the test data (bench/real_files.py "
                        "fetches them), as they are and with injected transits")
    parser.add_argument("--planets", action="store_true", help="also score the real light "
                        "curves of known planet hosts (WASP-4, TOI-216, K2-140, K2-32) and of "
                        "stars without known planets, as they are, against the known periods")
    parser.add_argument("--make-chunks", metavar="FIRST-LAST FOLDER", nargs=2,
                        help="only make files of examples for --examples-file, one per seed "
                        "from FIRST to LAST, each of --stars new stars and --examples "
                        "examples, on --workers processes, into FOLDER")
    args = parser.parse_args()
    if args.make_chunks:
        first, last = (int(seed) for seed in args.make_chunks[0].split("-"))
        os.makedirs(args.make_chunks[1], exist_ok=True)
        calls = [(seed, args.stars, args.examples, args.cadence, args.make_chunks[1])
                 for seed in range(first, last + 1)]
        for _, path in run_in_processes(make_chunk, calls, args.workers):
            print(path, flush=True)
        return
    kinds = args.local_kinds.split(",")
    numbers = (None if args.numbers is None else
               () if args.numbers == "none" else tuple(args.numbers.split(",")))
    analysis = Analysis(finders=["transit"], classifier={"global_bins": 2001, "local_bins": 201,
                                                         "local_kinds": kinds})
    print(f"load average before: {os.getloadavg()}")
    kept = bool(args.examples_file and glob.glob(args.examples_file))
    # with kept examples the stars are for the scoring rate alone (its first 20, the same)
    stars = make_stars(min(args.stars, 20) if kept else args.stars, args.cadence, analysis)
    if kept:
        made = read_examples(args.examples_file)
        if made.series is not None:     # views of this run's kinds from the kept series
            made = remade_views(made, analysis)
    else:
        if args.workers > 1:    # chunks on worker processes, as skyretriever train makes them
            made = make_examples_in_processes(analysis, stars, args.examples, 1, args.workers,
                                              keep_series=bool(args.examples_file))
            made.seconds *= args.workers     # CPU, about
        else:
            made = make_examples(analysis, stars, args.examples, seed=1,
                                 keep_series=bool(args.examples_file))
        if args.examples_file:
            write_examples(made, args.examples_file)
    print(f"{len(made)} examples made in {made.seconds:.0f} s "
          f"({made.seconds / (len(made) + sum(made.dropped.values())):.2f} s each); {made.summary()['by_kind']}; "
          f"dropped {dict(made.dropped)}")
    pars = TrainingParameters(epochs=args.epochs, seed=0, threads=args.threads,
                              patience=args.patience, networks=args.networks,
                              weight_average=args.weight_average)
    parts = split_by_source(made.sources, pars.split, pars.seed)
    test = made.subset(parts == 2)
    pars = pars.model_copy(update={"seed": args.seed})
    results = {"examples": made.summary(), "test": int((parts == 2).sum()), "models": {},
               "numbers": numbers}
    sde = evaluate(test.labels, test.sde, 6.0)
    results["sde"] = {k: getattr(sde, k) for k in ("auc", "auprc", "recall_at_99_precision")}
    print(f"SDE:  AUC {sde.auc:.4f}  AUPRC {sde.auprc:.4f}  recall@99%prec "
          f"{sde.recall_at_99_precision:.3f}  (test: {len(test)} examples, "
          f"{int(test.labels.sum())} transits)")
    # the test set: transits injected at S/N 7-20 (training draws them up to 60)
    faint = (test.labels == 0) | (test.injected_snr <= 20.0)
    if len(set(test.labels[faint].tolist())) == 2:
        sde_faint = evaluate(test.labels[faint], test.sde[faint], 6.0)
        results["sde"]["auc_snr_7_20"] = sde_faint.auc
        results["sde"]["recall_at_99_precision_snr_7_20"] = sde_faint.recall_at_99_precision
        print(f"SDE, transits of S/N 7-20 only:  AUC {sde_faint.auc:.4f}  recall@99%prec "
              f"{sde_faint.recall_at_99_precision:.3f}  ({int(test.labels[faint].sum())} "
              "transits)")
    fitted = {}
    for name in (args.only,) if args.only else ("gbt", "cnn"):
        model, history, seconds = fit_model(name, made, parts, pars, 2001, 201,
                                            local_kinds=kinds, candidate_numbers=numbers)
        fitted[name] = model
        result = evaluate(test.labels, test.scores(model), 0.5)
        rate, wall_rate = scoring_rate(analysis, model, stars, 1000)
        results["models"][name] = {"auc": result.auc, "auprc": result.auprc,
                                   "recall_at_99_precision": result.recall_at_99_precision,
                                   "confusion": result.confusion, "fit_seconds": seconds,
                                   "epochs": len(history["train_loss"]),
                                   "candidates_per_cpu_second": rate,
                                   "candidates_per_wall_second": wall_rate}
        print(f"{name}:  AUC {result.auc:.4f}  AUPRC {result.auprc:.4f}  recall@99%prec "
              f"{result.recall_at_99_precision:.3f}  confusion {result.confusion}  fit "
              f"{seconds:.1f} s ({len(history['train_loss'])} epochs)  scoring "
              f"{rate:.0f} candidates per CPU second ({wall_rate:.0f}/s wall)")
        if len(set(test.labels[faint].tolist())) == 2:
            low = evaluate(test.labels[faint], test.scores(model)[faint], 0.5)
            results["models"][name].update(auc_snr_7_20=low.auc,
                                           recall_at_99_precision_snr_7_20=(
                                               low.recall_at_99_precision))
            print(f"{name}, transits of S/N 7-20 only:  AUC {low.auc:.4f}  recall@99%prec "
                  f"{low.recall_at_99_precision:.3f}  confusion {low.confusion}")
        print(f"{name}: {errors(test, test.scores(model))}")
    if args.networks > 1 and "cnn" in fitted:     # each network of the mean on its own
        import copy

        for number, network in enumerate(fitted["cnn"].networks):
            alone = copy.copy(fitted["cnn"])
            alone.networks, alone._steps = [network], None
            scores = test.scores(alone)
            one, low = evaluate(test.labels, scores, 0.5), evaluate(
                test.labels[faint], scores[faint], 0.5)
            results["models"]["cnn"].setdefault("networks", []).append(
                {"auc": one.auc, "auc_snr_7_20": low.auc,
                 "recall_at_99_precision_snr_7_20": low.recall_at_99_precision})
            print(f"cnn network {number} alone:  AUC {one.auc:.4f}; S/N 7-20: AUC "
                  f"{low.auc:.4f}  recall@99%prec {low.recall_at_99_precision:.3f}")
    if args.real_files:
        results["real_files"] = score_real(analysis, fitted)
    if args.planets:
        results["planets"] = score_planets(analysis, fitted,
                                           analysis.pars.classifier.threshold)
    if args.fit_examples:
        rng = np.random.default_rng(2)
        pick = rng.integers(0, len(made), args.fit_examples)
        flip = rng.random(args.fit_examples) < 0.5
        global_views = np.where(flip[:, None], made.global_views[pick, ::-1],
                                made.global_views[pick])
        local_views = np.where(flip[:, None], made.local_views[pick, ::-1], made.local_views[pick])
        global_views = global_views + rng.normal(0, 0.05, global_views.shape).astype(np.float32)
        local_views = local_views + rng.normal(0, 0.05, local_views.shape).astype(np.float32)
        from skyretriever.analysis.classifier import ConvolutionalClassifier

        model = ConvolutionalClassifier(2001, 201, seed=0, threads=args.threads)
        begin = time.perf_counter()
        model.fit(global_views, local_views, made.labels[pick], None,
                  TrainingParameters(epochs=1, batch_size=pars.batch_size),
                  numbers=made.numbers(model.candidate_numbers)[pick])
        epoch = time.perf_counter() - begin
        results["cnn_epoch_seconds"] = {"examples": args.fit_examples, "seconds": epoch}
        print(f"cnn: one epoch on {args.fit_examples} examples: {epoch:.1f} s "
              f"({args.epochs} epochs at most: {args.epochs * epoch / 60:.1f} min)")
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
