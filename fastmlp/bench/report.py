"""The bench report as text: aligned tables of the measured rows and what was measured beside them."""

import os

from .common import LATE_EARLY_PAIRS, LAYER_SIZES, WARMUP_EPOCHS
from .fma_peak import scales_with_cores
from .optimizers import BATCH_SIZE as OPTIMIZER_BATCH_SIZE
from .recipe import describe_recipe, recipe_options


def format_table(header, lines, left=1):
    """An aligned text table: the first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def fma_header(fma):
    """The header lines naming the CPU, its vector width, the tile in use and the FMA roofline."""
    tile = fma["tile"]
    return [
        f"CPU: {fma['cpu']} (Numba compiles for {fma['target']}): {fma['vector_width']}-float vectors; "
        f"SIMD tile {tile['name']}, {tile['mr']} rows x {tile['nr']} columns ({tile['nv']} vectors of {tile['vw']})"
        + (f", {fma['tile_source']}" if fma.get("tile_source") else "")
        + (f" (the tuning took {fma['tuning_s']:.1f} s, once)" if fma.get("tuning_s") else ""),
        (f"FMA roofline: FMA peak {fma['core_gflops']:.1f} GFLOP/s on one core, {fma['all_gflops']:.1f} on "
         f"{fma['cores']} at once ({fma['chains']} independent FMA chains, no memory traffic) / "
         f"{fma['flops_per_sample'] / 1e3:.0f} kFLOP per sample = {fma['samples_per_s']:,.0f} samples/s "
         "(every FLOP of a dense step: numba's layer 0 skips the inputs that are zero, about half of its FLOPs on "
         "MNIST, so that its fractions of it may pass 100 %)"),
    ] + ([] if scales_with_cores(fma["core_gflops"], fma["all_gflops"], fma["cores"]) else [
        f"warning: the FMA peak on {fma['cores']} cores at once read only "
        f"{fma['all_gflops'] / fma['core_gflops']:.2f}x one core's (a core busy, or slowed by the host, while it was "
        f"measured): the fractions of the FMA roofline below read high"])


def split_lines(rows):
    """The line under the throughput table that says how the numba backend split each shape's two-worker steps
    (rows' "split", where its epochs chose one; with the rounds of each where the rows' round_splits name more
    than one: chosen again after the host moved the cores); none where no row has one."""
    chosen = [f"batch {r['batch_size']} {r['input']} {splits_by_round(r.get('round_splits') or [r['split']])}"
              for r in rows if r.get("split")]
    if not chosen:
        return []
    return ["numba's two-worker steps, the upper layers split by rows or replicated on each worker, each worker's "
            "batch in input buffers of its own unless 'inputs shared', as timed before the measured epochs "
            f"(fastmlp.backends.numba.threads.SplitChooser): {', '.join(chosen)}"]


def splits_by_round(rounds):
    """The split of every round (`rounds`: one per round), or where they ran more than one, each with its rounds:
    "split (rounds 1-4) then replicated (rounds 5-6)"."""
    if len(set(rounds)) < 2:
        return rounds[-1]
    runs: list[list] = []  # [split, first round, last round], 1-based
    for number, split in enumerate(rounds, 1):
        if runs and runs[-1][0] == split:
            runs[-1][2] = number
        else:
            runs.append([split, number, number])
    return " then ".join(f"{split or 'none kept'} (round{f' {a}' if a == b else f's {a}-{b}'})" for split, a, b in runs)


def drift_lines(rows):
    """The line under the throughput table that says how far the machine's speed moved during the run: the gemm
    floor repeats the same products every round, so its slowest steady epoch over its fastest, at the batch size
    where that is lowest. No line where no row has floor epochs after the warm-up ones."""
    spreads = []
    for r in rows:
        floor = r.get("floor_epoch_samples_per_s", [])[WARMUP_EPOCHS:]
        if floor and max(floor) > 0:
            spreads.append((min(floor) / max(floor), r["batch_size"]))
    if not spreads:
        return []
    lowest, batch_size = min(spreads)
    return [f"drift: the gemm floor's steady epochs (the same products every round) ran as slow as {lowest:.2f}x "
            f"their fastest (batch {batch_size}); the roofline columns, each measured once before the epochs, carry "
            f"such drift, while vs floor and vs numpy, same-round ratios, cancel it"]


def meeting_lines(rows, cpus):
    """The line under the throughput table with each batch size's barrier meetings (fastmlp.bench.barrier_meeting),
    least and most over its rounds; none where no row has them."""
    spans, seen = [], set()
    for r in rows:
        meetings = r.get("barrier_meeting_ns")
        if meetings and r["batch_size"] not in seen:
            seen.add(r["batch_size"])
            spans.append(f"batch {r['batch_size']} {min(meetings):.0f}-{max(meetings):.0f} ns")
    if not spans:
        return []
    where = f"CPUs {cpus[0]} and {cpus[1]}" if len(cpus or []) == 2 else "two CPUs the OS chose"
    return [f"two workers' meeting at numba's barrier ({where}), once a round: {', '.join(spans)}; several times "
            f"the least where the host ran the two cores far apart (on a VM: different dies), when two workers' "
            f"epochs slow down with it"]


def format_report(report):
    """The whole report of `run` as text: a header, the throughput table, then memory and compile time."""
    c, roof = report["config"], report["roofline"]
    out = [
        f"fastmlp bench ({c['mode']}): MNIST {c['samples']:,} training samples"
        + (" (a subset)" if c["subset"] else "") + f", net {'-'.join(map(str, c['layer_sizes']))}, "
        f"SGD lr {c['lr']}, {c['epochs']} epochs per run, backends {', '.join(c['backends'])}",
        *c["blas"],
    ]
    if "torch" in c["backends"]:
        out.append(f"torch {c['torch_version']}: {c['torch_threads']} threads (the BLAS thread count)")
    fma = report.get("fma_roofline")
    if fma:
        out += fma_header(fma)
    out += [
        f"sgemm roofline: {roof['sgemm_gflops']:.1f} GFLOP/s sgemm 2048^3 / {roof['flops_per_sample'] / 1e3:.0f} "
        f"kFLOP per sample = {roof['samples_per_s']:,.0f} samples/s"
        + (f" (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')} is set: without it, as the hardware "
           f"allows, {roof['native']['sgemm_gflops']:.1f} GFLOP/s = {roof['native']['samples_per_s']:,.0f} "
           f"samples/s, the 'vs native' column)" if "native" in roof else ""),
        f"steady state = median of epochs {WARMUP_EPOCHS + 1}-{c['epochs']}; vs floor, vs numpy = median of same-round "
        f"epoch ratios; late/early = the final state's epoch speed over that after epoch {WARMUP_EPOCHS}, "
        f"{LATE_EARLY_PAIRS} back-to-back pairs; floor = the step's gemms alone",
        "",
        format_table(
            ["batch", "backend", "input", "samples/s", "floor/s", "vs floor"] + (["vs FMA roof"] if fma else [])
            + ["vs sgemm roof"] + (["vs native"] if "native" in roof else []) + ["vs numpy", "late/early"],
            [[str(r["batch_size"]), r["backend"], r["input"], f"{r['samples_per_s']:,.0f}",
              f"{r['floor_samples_per_s']:,.0f}", f"{r['vs_floor']:.2f}"]
             + ([f"{100 * r['vs_fma_roofline']:.0f}%"] if fma else []) + [f"{r['vs_roofline']:.2f}"]
             + ([f"{r['vs_native_roofline']:.2f}"] if "native" in roof else [])
             + ["-" if r["vs_numpy"] is None else f"{r['vs_numpy']:.2f}", f"{r['late_over_early']:.2f}"]
             for r in report["rows"]], left=3),
        *split_lines(report["rows"]),
        *meeting_lines(report["rows"], c.get("meeting_cpus")),
        *drift_lines(report["rows"]),
        "",
        f"peak RSS, one process per row: loading the data, then training one epoch at each batch size "
        f"{', '.join(map(str, c['batch_sizes']))}"
        + ("" if all(m["reset"] for m in report["peak_rss"])
           else " (peak not resettable here: training includes loading)"),
        format_table(["backend", "input", "training peak MiB", "loading peak MiB"],
                     [[m["backend"], m["input"], f"{m['training_peak_mb']:,.0f}", f"{m['loading_peak_mb']:,.0f}"]
                      for m in report["peak_rss"]], left=2),
    ]
    if report.get("recipe"):
        options, epochs, hidden = recipe_options()
        recipe_epochs = report["recipe"][0]["epochs"]
        out += ["", f"the CLI's default recipe ({describe_recipe(options, recipe_epochs, hidden)}), Pixels input, "
                    f"once per backend through Trainer.fit; vs numba = numba's training seconds over the row's",
                format_table(["backend", "train s", "test accuracy", "vs numba"],
                             [[r["backend"], f"{r['train_s']:.2f}", f"{100 * r['test_accuracy']:.2f} %",
                               "-" if r["vs_numba"] is None else f"{r['vs_numba']:.2f}"]
                              for r in report["recipe"]])]
    if report.get("optimizers"):
        net = "-".join(map(str, LAYER_SIZES))  # the optimiser steps train the default net
        out += ["", f"one step's cost per optimiser, numba backend, {net}, batch {OPTIMIZER_BATCH_SIZE}, "
                    f"Pixels input: epochs interleaved round by round; vs = median of same-round ratios",
                format_table(["optimizer", "us per step", "vs sgd", "vs sgd nesterov"],
                             [[r["optimizer"], f"{r['step_us']:,.0f}", f"{r['vs_sgd']:.3f}",
                               f"{r['vs_sgd_nesterov']:.3f}"] for r in report["optimizers"]])]
    if report["compile"]:
        comp = report["compile"]
        out += ["", f"numba compile of the training epoch (float32 and pixels inputs), in a fresh process: "
                    f"cold cache {comp['numba_cold_s']:.2f} s, warm cache {comp['numba_warm_s']:.2f} s"]
    return "\n".join(out)
