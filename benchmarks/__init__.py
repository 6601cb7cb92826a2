"""`make bench`: measured ratios of the project's claims, written as JSON and a markdown table.

These machines are shared and noisy, so every comparison interleaves its two sides in
one run (baseline, ours, baseline, ours, …) and reports medians and their ratio; an
absolute time here means little, a ratio measured side by side means something.

``harness`` times sides, ``report`` turns results into JSON and markdown, ``fixtures``
builds the data each benchmark needs once per run, and every other module is one
benchmark with a ``run(ctx) -> BenchmarkResult`` function; ``run`` is the entry point.
"""
