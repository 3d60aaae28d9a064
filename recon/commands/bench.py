"""``recon bench``: run reconstruction methods and ablations on a suite and write a report."""

from __future__ import annotations

from pathlib import Path


def bench(
    out: Path,
    suite: str = "synthetic",
    methods: str = "recon,no-prune,no-view-offsets,no-tracking,pointmap-init,dust3r,splatt3r",
    quick: bool = False,
    scenes: str | None = None,
    seeds: str | None = None,
    inconsistency: str | None = None,
    size: tuple[int, int] | None = None,
    frames: int | None = None,
    panoptic_root: Path | None = None,
    panoptic_views: int | None = None,
    panoptic_frames: str | None = None,
    panoptic_scale: float | None = None,
    grids: tuple[Path, ...] = (),
    holdout: str | None = None,
    dust3r_repo: Path | None = None,
    dust3r_ckpt: Path | None = None,
    splatt3r_repo: Path | None = None,
    splatt3r_ckpt: Path | None = None,
    consistency: bool = True,
    config: Path | None = None,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    ray: bool = False,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_task: float = 1.0,
) -> None:
    """Benchmark methods on a suite; writes results.json, table.md and plots to OUT.

    Args:
        out: Output folder (results.json, table.md, metric_bars.png, psnr_per_cell.png,
            contact_sheet.png, runs/<case>/<method>/).
        suite: synthetic (procedural scenes with exact ground truth, clean and inconsistent),
            seedlike (the seed's kind of input: 8 views x 8 times at 144x256, depth mono-sim, i.e.
            ground truth degraded like a monocular estimator; quick: 72x128, inconsistent grids),
            panoptic (real CMU Panoptic capture, held-out cameras 0 and 10), generated (grid
            folders from `recon generate`, via --grids; no ground truth), custom (--grids, any input).
        methods: Comma-separated: recon, no-prune, no-view-offsets, no-tracking, pointmap-init,
            dust3r, splatt3r. Dust3R / Splatt3R run only with a local clone and checkpoint.
        quick: CPU-sized run: synthetic = 2 scenes x 1 seed x (clean, inconsistent) at 64 px,
            7 views (5 train + 2 held out), 4 times, the pipeline's default iterations; panoptic = 8
            training cameras, times 0, 2, 4, 6, 160x90, held-out test cameras 0 and 10. Sized for
            at most 15 minutes on 2 idle cores (5 in-house methods); measured times are in
            BENCHMARKS.md.
        scenes: Synthetic scenes, comma-separated (default orbit,bounce,twist,mixed; quick: orbit,bounce).
        seeds: Synthetic seeds, comma-separated (default 0,1; quick: 0).
        inconsistency: Injected inconsistency strengths, comma-separated (default 0,0.6).
        size: Synthetic image size H W (default 128 128; quick: 64 64).
        frames: Synthetic time steps (default 8; quick: 4).
        panoptic_root: Panoptic folder (default ../shared/data/panoptic_basketball next to the repo,
            or $RECON_SHARED_DATA/panoptic_basketball).
        panoptic_views: Panoptic training cameras, those nearest the test cameras (default 8; all: 27).
        panoptic_frames: Panoptic time steps, start:stop[:step] (default 0:16:4; quick: 0:8:2; all: 0:150).
        panoptic_scale: Panoptic image scale (default 0.25, i.e. 160x90; full resolution: 1).
        grids: Grid paths for the generated / custom suites.
        holdout: Custom suite: the views held out for evaluation (at every time), as views=...,
            e.g. views=1,5 (the syntax of `recon reconstruct --holdout`, without times).
        dust3r_repo: Local clone of naver/dust3r (never downloaded).
        dust3r_ckpt: Local Dust3R checkpoint file.
        splatt3r_repo: Local clone of btsmart/splatt3r.
        splatt3r_ckpt: Local Splatt3R checkpoint file.
        consistency: Also score the SfM consistency on suites with ground truth (always on without).
        config: JSON file of pipeline overrides (as `recon reconstruct --config`), applied to every method
            before its own switches. Any config field is also a dotted flag on top of it, as for
            `recon reconstruct`: e.g. --deform.iterations 300 --prune.iterations 50 --tracking.tracks rig
            (tracking source of the tracking-initialised methods; default: the suite's, flow even on
            synthetic grids, rig on panoptic) --tracking.depth mvs (depth for tracking and
            pointmap-init; default auto: GT on synthetic grids, MVS otherwise).
        device: auto, cpu or cuda[:N].
        seed: Seed of the fits and random initialisations.
        overwrite: Allow writing into an existing non-empty OUT.
        ray: Run the fits as Ray tasks (`pip install 'recon4d[ray]'`): a local Ray sized to this
            machine, or the cluster at --address; results equal the sequential run's for the same
            seeds (each fit's torch threads = --cpus-per-task).
        address: With --ray: join a Ray cluster (auto, or ray://HOST:PORT).
        workers: With --ray: task slots of the local Ray (default: every CPU).
        cpus_per_task: With --ray: CPUs (torch threads) each fit reserves.
    """
    from rich.console import Console

    from recon.bench.adapters import Dust3rAdapter, Splatt3rAdapter
    from recon.bench.report import write_report
    from recon.bench.runner import BenchSettings, run_bench
    from recon.bench.suites import SUITES, build_cases, suite_options
    from recon.config import cli_overrides, config_from_dict, load_config_file, parse_holdout
    from recon.schema import read_json
    from recon.device import check_seed, resolve_device
    from recon.errors import InputError

    console = Console()
    out = Path(out)
    if suite not in SUITES:
        raise InputError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}", field="--suite")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError("output folder exists and is not empty (pass --overwrite)", out)
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    if not method_list:
        raise InputError("no methods given", field="--methods")
    from recon.bench.runner import METHODS

    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; expected some of {', '.join(METHODS)}", field="--methods")

    def _list(text: str | None, cast, name: str):
        if text is None:
            return None
        try:
            return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise InputError(f"expected a comma-separated list, got {text!r}", field=name) from None

    opts = suite_options(
        quick,
        suite,
        scenes=_list(scenes, str, "--scenes"),
        seeds=None if seeds is None else tuple(check_seed(s, "--seeds") for s in _list(seeds, int, "--seeds")),
        inconsistency=_list(inconsistency, float, "--inconsistency"),
        size=size,
        frames=frames,
        panoptic_root=panoptic_root,
        panoptic_train_views=panoptic_views,
        panoptic_frames=panoptic_frames,
        panoptic_scale=panoptic_scale,
        grids=tuple(grids) or None,
        custom_holdout=None if holdout is None else tuple(parse_holdout(holdout, whole_views=True)[0]),
    )
    base = load_config_file(Path(config)) if config is not None else None  # checks the file (InputError)
    overrides = read_json(Path(config), what="config file") if config is not None else {}
    flags = cli_overrides()
    config_from_dict({"seed": seed, **flags}, base, "command line")  # the flags' types and ranges, before any work
    overrides = _deep_merge(overrides, flags)
    if suite == "seedlike" and quick:
        from recon.bench.suites import SEEDLIKE_QUICK_CONFIG

        overrides = _deep_merge(SEEDLIKE_QUICK_CONFIG, overrides)
    settings = BenchSettings(
        device=resolve_device(device),
        seed=seed,
        consistency=consistency,
        config=overrides,
        workers=(workers if ray else 1),
        address=address if ray else None,
        cpus_per_task=cpus_per_task,
        **({"threads": max(1, int(cpus_per_task))} if ray else {"threads": flags["threads"]} if "threads" in flags else {}),
    )
    if ray:
        from recon.batch import ray_available

        ok, why = ray_available()
        if not ok:
            raise InputError(why, field="--ray")
        if workers is not None and workers < 1:
            raise InputError(f"expected workers >= 1, got {workers}", field="--workers")
    adapters = {"dust3r": Dust3rAdapter(dust3r_repo, dust3r_ckpt), "splatt3r": Splatt3rAdapter(splatt3r_repo, splatt3r_ckpt)}
    with console.status("building cases"):
        cases = build_cases(suite, opts)
    console.print(f"[bold]recon bench[/] {suite}: {len(cases)} case(s) x {len(method_list)} method(s) -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    results, sheet = run_bench(suite, cases, method_list, settings, out, adapters, quick,
                               progress=lambda msg: console.print(msg, markup=False, highlight=False))
    for m, st in results["methods"].items():
        if st["status"] != "ok":
            console.print(f"{m}: {st['reason']}", markup=False, highlight=False)
    md = write_report(out, results, sheet)
    console.print(md, soft_wrap=True, markup=False, highlight=False)
    console.print(f"wrote {out / 'results.json'}, {out / 'table.md'} and {', '.join(results['plots'])}")


def _deep_merge(base: dict, top: dict) -> dict:
    """``top`` on ``base``, nested dicts merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
