"""Command line: ``deem demo``, ``deem fit``, ``deem predict`` and ``deem aggregate`` (also under ``torchrun -m
deem aggregate``: one fit across the processes, :mod:`deem.distributed`, the same consensus file, written
once by rank 0). Files: :mod:`deem.files`. A bad file or setting is one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _demo(args) -> int:
    if args.digits:
        return _demo_digits(args)
    from .alignment import majority_vote
    from ._validation import check_labels
    from .datasets import crowd_with_spammers
    from .estimator import DEEM
    from .report import flags, wilson

    X, y, roles, true_accuracy = crowd_with_spammers(random_state=args.seed)
    n, d = X.shape
    print(f"A crowd of {d} annotators on {n} tasks, 4 classes, 5 labels a task: {roles.count('honest')} honest "
          f"(accuracy 0.5-0.9), {roles.count('spammer')} spammers (random answers) and one adversary who labels half "
          "the tasks, always with the wrong class (the next one).")
    mv = majority_vote(check_labels(X)).numpy()
    start = time.perf_counter()
    model = DEEM(random_state=args.seed, device=args.device, verbose=args.verbose, **_model_args(args))
    consensus = model.fit(X).predict(X)
    elapsed = time.perf_counter() - start
    print(f"\nMajority vote accuracy: {np.mean(mv == y):.4f}   (the spammers add noise; the adversary outvotes)")
    print(f"DEEM accuracy:          {np.mean(consensus == y):.4f}   "
          f"(solver {model.solver_}, fit + predict {elapsed:.2f} s on {model.device_})")
    skill = np.asarray(model.skill_)
    given = (X >= 0).sum(axis=0)
    found = flags(np.asarray(model.confusion_), skill, *wilson(skill, given), given, model._aligned_class_prior())
    print("\nWhat DEEM learned about each annotator, without any gold label (skill_ = its expected accuracy):")
    print(f"  {'annotator':<10} {'role':<10} {'true accuracy':>13} {'skill_':>7}  flags")
    for i in np.argsort(-np.asarray(model.skill_)):
        print(f"  {i:<10} {roles[i]:<10} {true_accuracy[i]:>13.2f} {model.skill_[i]:>7.2f}  {'; '.join(found[i])}")
    print("\nSee it as a page: model.report('report.html', X), or deem report answers.csv -o report.html")
    return 0


def _demo_digits(args) -> int:
    from .alignment import majority_vote
    from ._validation import check_labels
    from .datasets import classifier_ensemble
    from .estimator import DEEM

    preds, y, names = classifier_ensemble(random_state=args.seed)
    print(f"Ensemble: {len(names)} scikit-learn classifiers ({', '.join(names)})")
    print(f"Test set: {preds.shape[0]} handwritten digits (sklearn.datasets.load_digits), 10 classes\n")
    for name, col in zip(names, preds.T):
        print(f"  {name:<14} accuracy {np.mean(col == y):.4f}")
    mv = majority_vote(check_labels(preds)).numpy()
    start = time.perf_counter()
    model = DEEM(n_classes=10, random_state=args.seed, device=args.device, verbose=args.verbose, **_model_args(args))
    consensus = model.fit(preds).predict(preds)
    elapsed = time.perf_counter() - start
    print(f"\nMajority vote accuracy: {np.mean(mv == y):.4f}")
    print(f"DEEM accuracy:          {np.mean(consensus == y):.4f}   "
          f"(solver {model.solver_}, fit + predict {elapsed:.2f} s on {model.device_})")
    return 0


def _model_args(args) -> dict:
    return dict(solver=args.solver, epochs=args.epochs, auto_hyperparameters=args.auto,
                model_dir=args.model_dir, use_preprocessing=args.preprocessing is not None,
                preprocessing_activation=args.preprocessing or "sparsemax")


def _launched_by_torchrun() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _aggregate(args) -> int:
    import pandas as pd

    from .estimator import DEEM

    comm = None
    if _launched_by_torchrun():  # torchrun --nproc_per_node=N -m deem aggregate ...: one fit across the ranks
        import torch
        import torch.distributed as dist

        from .distributed import Comm

        backend = "nccl" if args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available()) \
            else "gloo"
        if backend == "nccl":  # one GPU per process: torchrun's LOCAL_RANK picks it ("cuda" then means it)
            import os

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        comm = Comm()
    try:
        answers = _read_share(args, comm)
        model = DEEM(random_state=args.seed, device=args.device, verbose=args.verbose, distributed=comm is not None,
                     **_model_args(args))
        consensus = model.fit_long(answers, task=args.task, worker=args.worker, label=args.label).predict_long(
            answers, task=args.task, worker=args.worker, label=args.label)
        if comm is not None:  # predictions stay local; rank 0 gathers them and writes once
            parts = comm.gather(consensus)
            if comm.rank != 0:
                return 0
            consensus = pd.concat(parts)
            try:
                consensus = consensus.sort_index()  # the single-process order: tasks sorted
            except TypeError:  # task ids of mixed, unorderable types
                pass
        _write_consensus(args, consensus)
    finally:
        if comm is not None:
            comm.dist.destroy_process_group()
    return 0


def _read_share(args, comm):
    """This process's share of the answers: every file (one process), or under torchrun the files of this rank
    (file i to rank i mod N) -- or, with a single file, the tasks whose sorted position is this rank mod N."""
    import pandas as pd

    files = list(args.answers)
    if comm is None:
        frames = [_read_long(f, args) for f in files]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(files) == 1:
        df = _read_long(files[0], args)
        codes, _ = pd.factorize(df[args.task], sort=True)
        return df[codes % comm.world == comm.rank]
    mine = files[comm.rank::comm.world]
    if not mine:
        raise ValueError(f"{len(files)} input files for {comm.world} processes; give each process at least one "
                         "file (or one file for all)")
    return pd.concat([_read_long(f, args) for f in mine], ignore_index=True)


def _read_long(path, args):
    from .files import read_input

    kind, value = read_input(path, args.task, args.worker, args.label)
    if kind != "long":
        raise ValueError(f"{path}: 'deem aggregate' reads long-format tables ({args.task}, {args.worker}, "
                         f"{args.label}); this file is a dense matrix: use 'deem fit' then 'deem predict'")
    return value


def _write_consensus(args, consensus) -> None:
    import pandas as pd

    from .files import write_table

    if args.output:
        write_table(consensus.to_frame(), args.output)
        print(f"wrote {len(consensus)} consensus labels to {args.output}")
    else:
        consensus.to_frame().to_csv(sys.stdout)
    if args.truth:
        truth = pd.read_csv(args.truth).set_index(args.task)[args.label]
        common = truth.index.intersection(consensus.index)
        print(f"accuracy on {len(common)} tasks with a gold label: {np.mean(consensus[common] == truth[common]):.4f}",
              file=sys.stderr)


def _fit(args) -> int:
    from .estimator import DEEM
    from .files import read_input

    kind, value = read_input(args.input, args.task, args.worker, args.label)
    model = DEEM(random_state=args.seed, device=args.device, verbose=args.verbose, **_model_args(args))
    if kind == "long":
        model.fit_long(value, task=args.task, worker=args.worker, label=args.label)
        what = f"{value[args.task].nunique()} tasks, {len(model.workers_)} workers"
    else:
        model.fit(value)
        what = f"{value.shape[0]} rows, {model.n_classifiers_} classifiers"
    model.save(args.output)
    print(f"fitted {what} (solver {model.solver_}, {model.n_classes_} classes); wrote {args.output}")
    return 0


def _predict(args) -> int:
    import pandas as pd

    from .estimator import DEEM
    from .files import read_input, write_table

    model = DEEM().load(args.model)
    kind, value = read_input(args.input, args.task, args.worker, args.label)
    if kind == "long":
        if not hasattr(model, "workers_"):
            raise ValueError(f"{args.model} was fitted on a dense matrix; give it a dense matrix, not a long table")
        out = (model.predict_proba_long(value, args.task, args.worker, args.label) if args.proba else
               model.predict_long(value, args.task, args.worker, args.label).to_frame())
    else:
        if hasattr(model, "workers_"):
            raise ValueError(f"{args.model} was fitted on a long-format table; give it one ({args.task}, "
                             f"{args.worker}, {args.label}), not a dense matrix")
        if args.proba:
            out = pd.DataFrame(model.predict_proba(value)).rename_axis("row")
        else:
            out = pd.DataFrame({"label": model.predict(value)}).rename_axis("row")
    write_table(out, args.output)
    print(f"wrote {len(out)} {'probability rows' if args.proba else 'consensus labels'} to {args.output}")
    return 0


def _report(args) -> int:
    from .estimator import DEEM
    from .files import read_input

    if args.input is None:  # deem report INPUT -o page.html: fit first
        model_path, data_path = None, args.model_or_input
    else:
        model_path, data_path = args.model_or_input, args.input
    kind, value = read_input(data_path, args.task, args.worker, args.label)
    if model_path is None:
        model = DEEM(random_state=args.seed, device=args.device, **_model_args(args))
        model = model.fit_long(value, args.task, args.worker, args.label) if kind == "long" else model.fit(value)
    else:
        model = DEEM().load(model_path)
    model.report(args.output, value, args.task, args.worker, args.label, title=f"DEEM report: {data_path}")
    print(f"wrote {args.output}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deem", description="Deep Ensemble Energy Models: label aggregation.")
    sub = parser.add_subparsers(dest="command", required=True)
    inputs = ("INPUT is a long-format table (CSV, TSV or Parquet with the task, worker and label columns), a "
              "dense matrix (.npy, or a CSV/TSV/Parquet without those columns: one column per classifier, -1 "
              "for missing) or a .mat file of the original research code.")

    demo = sub.add_parser("demo", help="a crowd with spammers and an adversary: majority vote, DEEM, and what DEEM "
                          "learned about each annotator (--digits: a scikit-learn classifier ensemble instead)")
    demo.add_argument("--digits", action="store_true", help="aggregate nine scikit-learn classifiers on the digits")
    agg = sub.add_parser("aggregate", help="fit and predict at once: consensus labels from long-format tables",
                         description="Fit and predict at once. Reads long-format CSV/TSV/Parquet (one row per "
                         "label); writes the consensus per task (CSV, or Parquet by extension).")
    agg.add_argument("answers", nargs="+", help="table(s) with one row per label (several: one frame; under "
                     "torchrun --nproc_per_node=N -m deem aggregate ..., file i goes to process i mod N, or a "
                     "single file is shared out by task)")
    agg.add_argument("--truth", help="optional CSV (task, label) of gold labels: prints accuracy")
    agg.add_argument("--output", "-o", help="write the consensus here (.csv, .tsv or .parquet; default: stdout)")
    fit = sub.add_parser("fit", help="fit a model and save it", description="Fit DEEM on INPUT and save the model "
                         "(a safe-to-load file). " + inputs)
    fit.add_argument("input", help="the labels to fit")
    fit.add_argument("--output", "-o", required=True, help="where to save the model (e.g. model.deem)")
    pred = sub.add_parser("predict", help="consensus labels (or probabilities) from a saved model",
                          description="Predict with a model saved by 'deem fit'. " + inputs + " Writes one row "
                          "per task (long input) or per row (dense input): CSV, TSV or Parquet by extension.")
    pred.add_argument("model", help="a model saved by 'deem fit'")
    pred.add_argument("input", help="the labels to aggregate (the same kind the model was fitted on)")
    pred.add_argument("--output", "-o", required=True, help="output table (.csv, .tsv or .parquet)")
    pred.add_argument("--proba", action="store_true", help="write the probability of every class")
    rep = sub.add_parser("report", help="an HTML page of what a model learned (voters, confusions, consensus)",
                         description="Write one self-contained HTML page (figures embedded; opens offline): voters "
                         "ranked by reliability, confusion heat maps, flagged spammers and adversaries, the "
                         "consensus, agreement between voters, the training curve. 'deem report MODEL INPUT' "
                         "reads a model saved by 'deem fit'; 'deem report INPUT' fits one first. " + inputs +
                         " Needs matplotlib (pip install 'deem[report]').")
    rep.add_argument("model_or_input", help="a saved model (then INPUT follows), or the labels to fit and report")
    rep.add_argument("input", nargs="?", help="the labels the report reads")
    rep.add_argument("--output", "-o", required=True, help="the HTML page to write")
    for p in (agg, fit, pred, rep):
        p.add_argument("--task", default="task", help="task column of a long table (default: task)")
        p.add_argument("--worker", default="worker", help="worker column (default: worker)")
        p.add_argument("--label", default="label", help="label column (default: label)")
    for p in (demo, agg, fit, rep):
        p.add_argument("--solver", default="auto", choices=["auto", "bayes", "exact", "gwg", "dlp"])
        p.add_argument("--epochs", type=int, default=100, help="training epochs of the gwg and dlp solvers")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
        p.add_argument("--verbose", action="store_true", help="show a progress bar (and auto-chosen values)")
        p.add_argument("--auto", action="store_true",
                       help="auto_hyperparameters: predict the settings left at their defaults from the data")
        p.add_argument("--model-dir", help="a custom hyperparameter predictor bundle for --auto")
        p.add_argument("--preprocessing", nargs="?", const="sparsemax", metavar="ACTIVATION",
                       choices=["sparsemax", "entmax", "softmax", "relu", "gelu", "silu"],
                       help="one learnable preprocessing layer (activation, default sparsemax)")
    args = parser.parse_args(argv)
    command = {"demo": _demo, "aggregate": _aggregate, "fit": _fit, "predict": _predict,
               "report": _report}[args.command]
    try:
        return command(args)
    except (ValueError, TypeError, KeyError, OSError, ImportError) as e:  # a bad file or setting: one line, no traceback
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"deem {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
