"""The scikit-learn-style ``DEEM`` estimator: glue between validation, the RBM, solvers and alignment."""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from . import persistence
from .log import log as _log
from ._threads import single_threaded_blas
from ._validation import LabelData, check_choice, check_labels, check_true_labels, is_sparse, present_rows
from .sparse import SparseLabels
from .alignment import agreement_table, assignment_from_table, hungarian_map, majority_vote
from .distributed import check_distributed, checked, resolve as resolve_distributed, total, total_int
from .long_format import learn_coding, to_sparse, union_coding
from .preprocessing import ACTIVATIONS, PREPROCESSING_INITS, Preprocessor
from .rbm import RBM
from . import solvers
from .anchor import check_anchor
from .autotune import predictor_constraints, solver_for_hidden_units
from .missingness import check_missing
from .solvers import INIT_METHODS, SCHEDULERS
from .solvers.one_unit import present_per_voter
from .solvers.soft_evidence import posterior_soft_evidence

# What auto_hyperparameters may predict (when left at their defaults).
PREDICTABLE = (
    "solver", "epochs", "batch_size", "learning_rate", "momentum", "init_method", "scheduler",
    "use_preprocessing", "preprocessing_layers", "preprocessing_activation", "prior_strength",
)
# Choices that decide which other hyperparameters matter: set by the user, they restrict the prediction.
STRUCTURAL = ("solver", "use_preprocessing")
# Under layout='auto', dense hard labels with fewer present entries than this share are stored sparse
# (unless preprocessing or the hyperparameter predictor reads them): below it the sparse passes and
# chains read less than the dense ones' scan of every cell.
SPARSE_BELOW = 1.0 / 16
LAYOUTS = ("auto", "dense", "sparse")
# Rows per predict call into the kernels: bounds the (rows, H, K) probability buffer.
_PREDICT_CHUNK = 1 << 20


class DEEM(BaseEstimator):
    """Unsupervised consensus of many classifiers or annotators with a multinomial RBM.

    Fit on a matrix of labels ``(n_samples, n_classifiers)`` (integers ``0..K-1``,
    ``-1`` for missing) or soft labels ``(n_samples, n_classes, n_classifiers)``;
    ``predict`` returns one consensus label per sample. See README for the model.
    """

    def __init__(
        self,
        n_classes: Optional[int] = None,
        hidden_dim: int = 1,
        cd_k: int = 10,
        deterministic: bool = True,
        learning_rate: float = 0.001,
        momentum: float = 0.9,
        epochs: int = 100,
        batch_size: int = 128,
        device: str = "auto",
        random_state: Optional[int] = None,
        use_weighted: bool = True,
        init_method: str = "mv_rand",
        solver: str = "auto",
        prior_strength: float = 2.0,
        sampler_steps: int = 5,
        sampler_oh_mode: bool = False,
        scheduler: str = "constant",
        auto_hyperparameters: bool = False,
        model_dir=None,
        use_preprocessing: bool = False,
        preprocessing_layers: int = 1,
        preprocessing_layer_widths=None,
        preprocessing_activation: str = "sparsemax",
        preprocessing_init: str = "identity",
        preprocessing_one_hot: bool = False,
        preprocessing_use_softmax: bool = False,
        preprocessing_jitter: float = 0.0,
        verbose: bool = False,
        missing: str = "auto",
        anchor: str = "auto",
        layout: str = "auto",
        distributed=False,
    ):
        self.n_classes = n_classes
        self.hidden_dim = hidden_dim
        self.cd_k = cd_k
        self.deterministic = deterministic
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.epochs = epochs
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.use_weighted = use_weighted
        self.init_method = init_method
        self.solver = solver
        self.prior_strength = prior_strength
        self.sampler_steps = sampler_steps
        self.sampler_oh_mode = sampler_oh_mode
        self.scheduler = scheduler
        self.auto_hyperparameters = auto_hyperparameters
        self.model_dir = model_dir
        self.use_preprocessing = use_preprocessing
        self.preprocessing_layers = preprocessing_layers
        self.preprocessing_layer_widths = preprocessing_layer_widths
        self.preprocessing_activation = preprocessing_activation
        self.preprocessing_init = preprocessing_init
        self.preprocessing_one_hot = preprocessing_one_hot
        self.preprocessing_use_softmax = preprocessing_use_softmax
        self.preprocessing_jitter = preprocessing_jitter
        self.verbose = verbose
        self.missing = missing
        self.anchor = anchor
        self.layout = layout
        self.distributed = distributed

    # ------------------------------------------------------------------ fit
    def fit(self, predictions, labels=None, epochs=None, learning_rate=None, batch_size=None,
            verbose: Optional[bool] = None, val_predictions=None, val_labels=None):
        """Train on ``predictions`` without ground truth.

        The fit is unsupervised: gold ``labels`` of these rows (``-1`` where unknown) and
        ``val_predictions`` / ``val_labels`` are only *watched*: ``history_['accuracy']`` and
        ``history_['val_accuracy']`` hold the consensus accuracy on them at every epoch (samplers)
        or convergence check (EM / VB), aligned to the training rows' majority vote as ``predict`` is.
        ``epochs``, ``learning_rate`` and ``batch_size`` override the constructor's values for this
        call only (``hyperparameters_`` records what ran), as in deem 0.2.0. Rows with every entry missing carry no
        information and are dropped (``n_dropped_rows_`` says how many).
        With ``auto_hyperparameters`` the hyperparameters left at their
        defaults are predicted from the data (``hyperparameters_`` holds what
        was used).
        """
        comm = self._comm()  # first: every rank reaches the same collectives, whatever fails later
        verbose = self.verbose if verbose is None else bool(verbose)
        device = checked(comm, "checking the settings", lambda: (self._check_hyperparameters(),
                                                                 self._resolve_device())[1])
        data = checked(comm, "checking the labels", lambda: check_labels(predictions, n_classes=self.n_classes))
        data = self._agree_labels(data, comm)
        data = checked(comm, "arranging the labels", lambda: self._arrange(data)).to(device)
        gold = checked(comm, "checking the gold labels", lambda: self._gold(data, labels, val_predictions, val_labels))
        self.layout_ = "sparse" if is_sparse(data) else "dense"
        all_rows = data
        keep = present_rows(data)
        self.n_dropped_rows_ = total_int(comm, int((~keep).sum()))
        if self.n_dropped_rows_:
            data = data.select(keep)
        hp = self._effective_hyperparameters(data, verbose)
        overrides = checked(comm, "checking fit's arguments",
                            lambda: _overrides(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size))
        if comm is not None:  # a rank on other epochs or batches would wait in a collective the others skip
            comm.agree("fit's epochs / learning_rate / batch_size", overrides)
        hp.update(overrides)
        self.hyperparameters_ = hp

        host_gen, dev_gen = self._generators(device)
        solver, init_method, refit = solvers.resolve(hp["solver"], self.hidden_dim, hp["use_preprocessing"],
                                                     data.soft, hp["init_method"])
        pre = None
        if hp["use_preprocessing"]:
            pre = solvers.PreprocessingSettings(
                layers=hp["preprocessing_layers"], widths=self.preprocessing_layer_widths,
                activation=hp["preprocessing_activation"], use_softmax=self.preprocessing_use_softmax,
                one_hot=self.preprocessing_one_hot, jitter=float(self.preprocessing_jitter),
                init=self.preprocessing_init)
        settings = solvers.Settings(
            hidden_dim=self.hidden_dim, prior_strength=float(hp["prior_strength"]), missing=self.missing,
            anchor=self.anchor, epochs=int(hp["epochs"]), batch_size=int(hp["batch_size"]),
            learning_rate=float(hp["learning_rate"]), momentum=float(hp["momentum"]), cd_k=int(self.cd_k),
            sampler_steps=int(self.sampler_steps), deterministic=bool(self.deterministic),
            scheduler=hp["scheduler"], init_method=init_method, use_weighted=bool(self.use_weighted),
            preprocessing=pre, refit=refit, device=device, host_generator=host_gen, device_generator=dev_gen,
            verbose=verbose, comm=comm,
            monitor=self._monitor(data, gold, comm, solvers.get_solver(solver).one_unit) if gold else None)
        impl = solvers.get_solver(solver)
        impl.check(data, settings)
        with single_threaded_blas():  # see deem/_threads.py: spinning BLAS threads slowed the kernels' passes
            result = impl.fit(data, all_rows, settings)
        for name, value in result.attributes.items():
            setattr(self, name, value)
        if result.fitted_all_rows:
            data = all_rows  # every row was fitted: an all-abstain row is evidence
        if verbose and result.report and (comm is None or comm.rank == 0):
            _log(result.report)
        self.model_ = result.model
        self.history_ = {"loss": list(result.history), **result.history_extra}
        if result.monitored:
            for key in result.monitored[0]:
                self.history_[key] = [m[key] for m in result.monitored]
        self.preprocessor_ = result.preprocessor
        self.solver_ = solver
        self.posterior_ = result.posterior
        self.device_ = device
        self.n_classes_ = data.n_classes
        self.n_classifiers_ = data.n_classifiers
        self.n_features_in_ = data.n_classifiers
        self.soft_labels_ = data.soft
        self.coverage_ = (total(comm, present_per_voter(all_rows).double())
                          / total_int(comm, all_rows.n_rows)).cpu().numpy()
        self.rank_, self.n_ranks_ = (0, 1) if comm is None else (comm.rank, comm.world)
        self._fit_comm = comm
        self.is_fitted_ = True
        # Align hidden states to the classes of the training data's majority vote,
        # so predictions come out in the input's label coding.
        self.class_map_ = self._alignment_against(data, comm)
        return self

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_fit_comm", None)  # a process group does not pickle; a loaded model predicts locally
        return state

    def _gold(self, data, labels, val_predictions, val_labels):
        """``[(history key, labels value, gold (N,) int64)]`` to watch during the fit (empty: none)."""
        gold = []
        if labels is not None:
            gold.append(("accuracy", data, check_true_labels(labels, data.n_rows)))
        if (val_predictions is None) != (val_labels is None):
            raise ValueError("give val_predictions and val_labels together (the accuracy on them is watched)")
        if val_predictions is not None:
            val = check_labels(val_predictions, n_classes=data.n_classes, n_classifiers=data.n_classifiers)
            if is_sparse(val) and not is_sparse(data):
                val = _densify(val, "this fit")
            elif is_sparse(data) and not is_sparse(val) and not val.soft:
                val = SparseLabels.from_dense(val.values, n_classes=data.n_classes)
            gold.append(("val_accuracy", val.to(data.device if hasattr(data, "device") else data.values.device),
                         check_true_labels(val_labels, val.n_rows)))
        return gold

    @staticmethod
    def _monitor(data, gold, comm, virtual_evidence: bool):
        """``monitor(rbm) -> {key: accuracy}``: the consensus of the model being fitted against gold labels,
        its hidden states aligned to the training rows' majority vote (summed over the ranks under ``comm``).
        ``virtual_evidence``: the posterior is the soft-evidence EM's, as ``predict`` reads it then."""
        mv = majority_vote(data).cpu().numpy()
        k = data.n_classes

        def consensus(rbm, values):
            with torch.no_grad():
                if virtual_evidence and values.soft:
                    post = posterior_soft_evidence(values.values, rbm.W[..., 0].double(), rbm.b_h[0].double())
                else:
                    post = rbm.hidden_probs(values)[:, 0, :]
                return post.argmax(dim=1).cpu().numpy()

        def monitor(rbm):
            table = agreement_table(consensus(rbm, data), mv, k)
            if comm is not None:
                table = comm.sum(torch.as_tensor(table)).numpy()
            mapping = assignment_from_table(table)
            out = {}
            for key, values, truth in gold:
                pred = mapping[consensus(rbm, values)]
                known = truth >= 0
                hits = np.array([(pred[known] == truth[known]).sum(), known.sum()], dtype=np.float64)
                if comm is not None:
                    hits = comm.sum(torch.as_tensor(hits)).numpy()
                out[key] = float(hits[0] / hits[1]) if hits[1] else float("nan")
            return out

        return monitor

    def _comm(self):
        """The collectives of a distributed fit (``distributed``; :mod:`deem.distributed`), or ``None``."""
        comm = resolve_distributed(check_distributed(self.distributed))
        if comm is not None:
            params = {k: repr(v) for k, v in self.get_params().items() if k != "distributed"}
            comm.agree("the estimator's settings", params)
            if self.auto_hyperparameters:
                raise ValueError("auto_hyperparameters reads every item's meta-features; a distributed fit needs "
                                 "auto_hyperparameters=False")
        return comm

    @staticmethod
    def _agree_labels(data, comm):
        """Under a distributed fit: one number of classes (hard labels: the largest any rank saw; soft labels:
        their class axis, the same on every rank), voters and kind of labels -- or the same ``ValueError`` on
        every rank."""
        if comm is None:
            return data
        comm.agree("the number of voters (columns)", data.n_classifiers)
        comm.agree("soft or hard labels", bool(data.soft))
        if data.soft:  # the class axis is the array's shape: a mismatch is an error, everywhere
            comm.agree("the number of classes (axis 1 of the soft labels)", data.n_classes)
        else:
            data.n_classes = comm.max_int(data.n_classes)
        return data

    def _effective_hyperparameters(self, data: LabelData, verbose: bool) -> dict:
        """The values ``fit`` uses: the constructor's, with predictions filled in under ``auto_hyperparameters``.

        A hyperparameter counts as set by the user when its value differs from
        the constructor default; only the others are predicted (the estimator's
        own parameters are never modified, as scikit-learn requires).
        """
        hp = {name: getattr(self, name) for name in PREDICTABLE}
        self.meta_features_ = None
        self.predicted_hyperparameters_ = None
        names = self._auto_names()
        if not names:
            return hp
        from .autotune import load_predictor
        from .meta_features import meta_features

        features = meta_features(data)
        defaults = _constructor_defaults()
        # The structural choices the user made restrict the candidates (a sampler solver asks for the
        # best sampler settings, use_preprocessing=True for the best layered ones); any other value
        # the user set is simply kept.
        fixed = predictor_constraints(
            {name: hp[name] for name in STRUCTURAL if not _same(getattr(self, name), defaults[name])},
            self.hidden_dim)
        predictor = load_predictor(self.model_dir)
        index, reason = predictor.choose(features, fixed)
        predicted = {} if index is None else dict(predictor.configs[index])
        chosen = {}
        for name in names:
            if name in predicted and _same(getattr(self, name), defaults[name]):
                hp[name] = predicted[name]
                chosen[name] = predicted[name]
        hp["solver"] = solver_for_hidden_units(hp["solver"], self.hidden_dim)
        self.meta_features_ = features
        self.predicted_hyperparameters_ = predicted
        if verbose:
            lines = [f"  {name} = {hp[name]!r}" + (" (predicted)" if name in chosen else " (yours)")
                     for name in names]
            _log(f"DEEM auto_hyperparameters ({reason}):\n" + "\n".join(lines))
        return hp

    def _auto_names(self):
        auto = self.auto_hyperparameters
        if isinstance(auto, (bool, np.bool_)):
            return list(PREDICTABLE) if auto else []
        return list(auto)

    # -------------------------------------------------------- reliability
    @property
    def confusion_(self) -> np.ndarray:
        """``(D, K, K)``: ``confusion_[i, c, l]`` = P(classifier i says l | true class c), aligned classes.

        Read off the model: with one hidden unit the visible units are
        independent given the hidden state, P(v_i = l | h = m) = softmax_l(b_v[i, l] + W[l, m, i, 0]).
        With more hidden units, the others are left out (their states averaged away are not).
        With preprocessing layers these are the RBM's *virtual* classifiers (``D`` = the last layer's width).
        """
        check_is_fitted(self, "model_")
        with torch.no_grad():
            rbm = self.model_
            theta = rbm.W[..., 0] + rbm.b_v.t().unsqueeze(1)  # (K_l, K_m, D)
            cond = torch.softmax(theta, dim=0).permute(2, 1, 0).double().cpu().numpy()  # (D, m, l)
        out = np.empty_like(cond)
        mapping = np.arange(self.n_classes_) if self.class_map_ is None else self.class_map_
        out[:, mapping, :] = cond
        return out

    @property
    def skill_(self) -> np.ndarray:
        """``(D,)`` each classifier's expected accuracy: sum_c P(true class c) * confusion_[i, c, c]."""
        check_is_fitted(self, "model_")
        diag = np.diagonal(self.confusion_, axis1=1, axis2=2)  # (D, K)
        return diag @ self._aligned_class_prior()

    @property
    def abstain_rate_(self) -> np.ndarray:
        """``(D, K)``: ``abstain_rate_[i, c]`` = P(voter i gives no label | true class c), aligned classes.

        Learned per class for the voters whose abstentions the model holds (``informative_voters_``: every
        voter when ``missing_ == 'informative'``, some when ``'mixed'``); for the others a voter's rate is its
        share of missing entries, the same for every class.
        With preprocessing layers there is no such rate for the virtual classifiers: NaN.
        """
        check_is_fitted(self, "model_")
        rbm = self.model_
        if rbm.informative:
            rate = rbm.log_abstain.exp().cpu().numpy()  # (D, K) in hidden-state order
            out = np.empty_like(rate)
            out[:, self._mapping()] = rate
            modelled = getattr(self, "informative_voters_", None)
            if modelled is not None:  # missing_ == 'mixed': the other voters' rate is their share of missing entries
                ignorable = ~np.asarray(modelled, dtype=bool)
                out[ignorable] = (1.0 - np.asarray(self.coverage_))[ignorable, None]
            return out
        if getattr(self, "preprocessor_", None) is not None:
            return np.full((self.n_classifiers_, self.n_classes_), np.nan)
        return np.repeat((1.0 - np.asarray(self.coverage_))[:, None], self.n_classes_, axis=1)

    @property
    def accuracy_when_voting_(self) -> np.ndarray:
        """``(D,)`` P(voter i's label is the true class | it gave one): ``confusion_`` on the diagonal,
        weighted by the classes it votes on (class prior times its rate of voting on each)."""
        check_is_fitted(self, "model_")
        votes = self._aligned_class_prior()[None, :] * (1.0 - self.abstain_rate_)  # (D, K)
        diag = np.diagonal(self.confusion_, axis1=1, axis2=2)
        total = votes.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (diag * votes).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)

    def _mapping(self) -> np.ndarray:
        return np.arange(self.n_classes_) if self.class_map_ is None else self.class_map_

    def _aligned_class_prior(self) -> np.ndarray:
        """``(K,)`` the fitted class prior, in aligned class order."""
        prior = self.model_.class_log_prior().exp().cpu().numpy()
        out = np.empty_like(prior)
        out[self._mapping()] = prior
        return out

    # -------------------------------------------------------------- predict
    def predict(self, predictions, return_probs: bool = False, align_to=None):
        """Consensus label per row, in the aligned class order.

        ``align_to``: reference predictions; the hidden states are matched to the
        classes of its majority vote (Hungarian) and that mapping is cached in
        ``class_map_`` for later calls. Rows whose every entry is missing get the
        model's prior class (the argmax of the hidden bias).
        With ``return_probs=True`` returns the ``(n_samples, n_classes)`` probabilities instead,
        as deem 0.2.0 does (``predict_proba`` is the same).
        """
        labels, probs = self._predict(predictions, align_to)
        return probs if return_probs else labels

    def _predict(self, predictions, align_to=None):
        """``(labels, probabilities)`` of ``predict``, in the input's array type."""
        check_is_fitted(self, "model_")
        data = check_labels(predictions, n_classes=self.n_classes_, n_classifiers=self.n_classifiers_)
        if is_sparse(data) and getattr(self, "preprocessor_", None) is not None:
            data = _densify(data, "this model's preprocessing layers")  # read dense (see _arrange)
        probs = self._raw_probs(data)
        if align_to is not None:
            ref = check_labels(align_to, n_classes=self.n_classes_, n_classifiers=self.n_classifiers_)
            if is_sparse(ref) and getattr(self, "preprocessor_", None) is not None:
                ref = _densify(ref, "this model's preprocessing layers")
            self.class_map_ = self._alignment_against(ref.to(self.device_))
        aligned = self._apply_map(probs)
        labels = aligned.argmax(dim=1)
        as_torch = isinstance(predictions, torch.Tensor)
        out_labels = labels.to(predictions.device) if as_torch else labels.cpu().numpy()
        out_probs = aligned.to(predictions.device) if as_torch else aligned.cpu().numpy()
        return out_labels, out_probs

    def predict_proba(self, predictions):
        """``(n_samples, n_classes)`` probabilities of each consensus class, aligned like ``predict``."""
        return self._predict(predictions)[1]

    def report(self, path, predictions, task: str = "task", worker: str = "worker", label: str = "label",
               title: str = "DEEM report"):
        """Write one self-contained HTML page of what the fit learned about ``predictions`` (:mod:`deem.report`):
        voters ranked by reliability with uncertainty bands, confusion heat maps, flagged spammers and
        adversaries, the consensus's class balance and confidence, agreement between voters, the training
        curve. ``predictions``: what ``predict`` takes, or the long frame of ``fit_long``. Needs matplotlib
        (``pip install 'deem[report]'``). Returns ``path``."""
        from .report import write_report

        check_is_fitted(self, "model_")
        if type(predictions).__name__ == "DataFrame":
            coded = self._code_long(predictions, task, worker, label)
            return write_report(self, path, coded.labels, names=list(self.workers_), classes=list(self.classes_),
                                title=title)
        return write_report(self, path, predictions, title=title)

    def score(self, predictions, true_labels) -> float:
        """Accuracy of the consensus against ``true_labels`` (entries ``-1`` are skipped).

        Uses the cached alignment; if it was reset, aligns against the majority
        vote of ``predictions`` first (never against the true labels).
        """
        check_is_fitted(self, "model_")
        align = predictions if self.class_map_ is None else None
        pred = np.asarray(self._to_numpy(self.predict(predictions, align_to=align)))
        truth = check_true_labels(true_labels, pred.shape[0])
        known = truth >= 0
        if not known.any():
            raise ValueError("true_labels has no known label (all -1)")
        return float((pred[known] == truth[known]).mean())

    # ------------------------------------------------------------ alignment
    def get_class_mapping(self):
        """``{predicted hidden state: aligned class}``, or ``None`` after ``reset_class_mapping``."""
        check_is_fitted(self, "model_")
        if self.class_map_ is None:
            return None
        return {int(k): int(v) for k, v in enumerate(self.class_map_)}

    def reset_class_mapping(self):
        """Forget the cached alignment: ``predict`` returns raw hidden states until ``align_to`` is given."""
        check_is_fitted(self, "model_")
        self.class_map_ = None
        return self

    # ---------------------------------------------------------- long format
    def fit_long(self, df, task: str = "task", worker: str = "worker", label: str = "label", verbose=None):
        """Fit on long-format labels: a DataFrame with one row per (task, worker, label).

        Learns ``workers_`` (column order) and ``classes_`` (label coding:
        ``0..K-1`` for integer labels, else the sorted distinct labels).
        """
        comm = self._comm()
        workers, classes = checked(comm, "reading the long-format frame",
                                   lambda: learn_coding(df, worker, label, self.n_classes))
        if comm is not None:  # one coding for every rank: the union of what each saw
            workers, classes = union_coding(comm, workers, classes)
        coded = checked(comm, "coding the long-format frame",  # never a dense tasks x workers matrix
                        lambda: to_sparse(df, task, worker, label, workers, classes))
        fitted_n_classes = self.n_classes
        try:
            self.n_classes = len(classes)
            self.fit(coded.labels, verbose=verbose)
        finally:
            self.n_classes = fitted_n_classes
        self.workers_ = workers
        self.classes_ = classes
        return self

    def predict_long(self, df, task: str = "task", worker: str = "worker", label: str = "label"):
        """Consensus per task as a pandas Series indexed by task (name ``label``), in the fitted label coding."""
        import pandas as pd

        coded = self._code_long(df, task, worker, label)
        pred = self.predict(coded.labels)
        return pd.Series(np.asarray(self.classes_, dtype=object)[pred] if self.classes_.dtype == object
                         else self.classes_[pred], index=coded.tasks, name=label)

    def predict_proba_long(self, df, task: str = "task", worker: str = "worker", label: str = "label"):
        """Consensus probabilities per task: a DataFrame indexed by task, one column per class."""
        import pandas as pd

        coded = self._code_long(df, task, worker, label)
        return pd.DataFrame(self.predict_proba(coded.labels), index=coded.tasks, columns=list(self.classes_))

    def _code_long(self, df, task, worker, label):
        check_is_fitted(self, "workers_")
        return to_sparse(df, task, worker, label, self.workers_, self.classes_)

    def _arrange(self, data):
        """The labels in the layout the fit reads (``layout``; see README, "Labels stored sparse").

        Every solver reads hard labels stored sparse (the one-unit ones by item and by voter, the samplers
        and multi-unit models as padded rows); the preprocessing layers and the hyperparameter predictor
        read them dense. Under ``'auto'`` dense hard labels go sparse when fewer than ``SPARSE_BELOW`` of
        their entries are present. Both layouts give the same fit.
        """
        if data.soft:
            if self.layout == "sparse":
                raise ValueError("layout='sparse' holds hard labels; soft labels stay dense")
            return data
        reads_sparse = not self.use_preprocessing and not self.auto_hyperparameters
        if self.layout == "sparse" and not reads_sparse:
            raise ValueError(f"layout='sparse': use_preprocessing={self.use_preprocessing} and auto_hyperparameters="
                             f"{self.auto_hyperparameters!r} read the labels dense; set them off or use "
                             "layout='dense' / 'auto'")
        if is_sparse(data):
            if reads_sparse and self.layout != "dense":
                return data
            return _densify(data, f"layout={self.layout!r}, use_preprocessing={self.use_preprocessing}, "
                                  f"auto_hyperparameters={self.auto_hyperparameters!r}")
        present = int((data.values >= 0).sum()) / max(data.values.numel(), 1)  # no N x D float copy
        if self.layout == "sparse" or (self.layout == "auto" and reads_sparse and present < SPARSE_BELOW):
            from .sparse import SparseLabels

            return SparseLabels.from_dense(data.values, n_classes=data.n_classes, device=data.values.device)
        return data

    # ---------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (atomically; safe to load: no code in the file)."""
        check_is_fitted(self, "model_")
        fitted = {
            "n_classes_": self.n_classes_, "n_classifiers_": self.n_classifiers_,
            "history_": {k: [float(x) for x in v] for k, v in self.history_.items()}, "soft_labels_": self.soft_labels_,
            "n_dropped_rows_": self.n_dropped_rows_, "solver_": self.solver_, "init_method_": self.init_method_,
            "posterior_": self.posterior_, "variational_prior_": self.variational_prior_,
            "missing_": self.missing_, "missing_log_bayes_factor_": self.missing_log_bayes_factor_,
            "missing_one_class_share_": getattr(self, "missing_one_class_share_", None),
            "informative_voters_": None if getattr(self, "informative_voters_", None) is None else [
                bool(x) for x in self.informative_voters_],
            "anchor_": self.anchor_, "anchor_checks_": getattr(self, "anchor_checks_", None), "layout_": self.layout_,
            "anchor_few_labels_share_": getattr(self, "anchor_few_labels_share_", None),
            "coverage_": [float(c) for c in self.coverage_],
            "class_map_": None if self.class_map_ is None else [int(x) for x in self.class_map_],
            "hidden_dim": self.model_.n_hidden,
            "hyperparameters_": {k: _plain(v) for k, v in self.hyperparameters_.items()},
            "preprocessor": None if self.preprocessor_ is None else _describe(self.preprocessor_),
        }
        if hasattr(self, "workers_"):
            fitted["workers_"] = [_plain(w) for w in self.workers_]
            fitted["classes_"] = [_plain(c) for c in self.classes_]
        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        if self.preprocessor_ is not None:
            state.update({"pre." + k: v.detach().cpu() for k, v in self.preprocessor_.state_dict().items()})
        params = {k: _plain(v) for k, v in self.get_params().items()}
        params["distributed"] = False  # a loaded model predicts locally
        comm = getattr(self, "_fit_comm", None)
        if comm is None or comm.rank == 0:  # a distributed fit is written once, by rank 0
            persistence.save_state({"params": params, "fitted": fitted, "state": state}, path)
        if comm is not None:
            comm.dist.barrier(group=comm.group)  # no rank reads the file before it is there

    def load(self, path):
        """Load a model written by ``save`` into this estimator; returns ``self``."""
        payload = persistence.load_state(path)
        params = {k: v for k, v in payload["params"].items() if k in self.get_params()}
        self.set_params(**params)
        fitted = payload["fitted"]
        device = self._resolve_device()
        state = payload["state"]
        k, _, d, h = state["W"].shape
        rbm = RBM(d, k, h, device=device, dtype=state["W"].dtype)
        state = dict(state)
        state.setdefault("log_abstain", rbm.log_abstain)  # files of deem < 0.4 predate informative missingness
        rbm.log_abstain = torch.empty_like(state["log_abstain"], device=device, dtype=torch.float64)  # its shape
        rbm.load_state_dict({name: t.to(device) for name, t in state.items() if not name.startswith("pre.")})
        self.model_ = rbm
        described = fitted.get("preprocessor")
        self.preprocessor_ = None
        if described is not None:
            pre = Preprocessor(fitted["n_classifiers_"], described["widths"], k, described["activation"],
                               use_softmax=described["use_softmax"], one_hot=described["one_hot"],
                               jitter=described["jitter"], device=device)
            pre.load_state_dict({name[4:]: t.to(device) for name, t in state.items() if name.startswith("pre.")})
            pre.eval()
            self.preprocessor_ = pre
        self.hyperparameters_ = fitted.get("hyperparameters_", {})
        self.init_method_ = fitted.get("init_method_")
        self.variational_prior_ = fitted.get("variational_prior_")
        self.missing_ = fitted.get("missing_", "ignorable")
        self.missing_log_bayes_factor_ = fitted.get("missing_log_bayes_factor_")
        self.missing_one_class_share_ = fitted.get("missing_one_class_share_")
        voters = fitted.get("informative_voters_")  # older files do not say: every voter as missing_ says
        self.informative_voters_ = (np.asarray(voters, dtype=bool) if voters is not None
                                    else np.full(fitted["n_classifiers_"], self.missing_ == "informative"))
        self.anchor_ = fitted.get("anchor_", "none")  # files of deem < 0.5: always converged
        self.anchor_checks_ = fitted.get("anchor_checks_")
        self.anchor_few_labels_share_ = fitted.get("anchor_few_labels_share_")
        self.layout_ = fitted.get("layout_", "dense")
        self.coverage_ = np.asarray(fitted.get("coverage_", [np.nan] * fitted["n_classifiers_"]), dtype=np.float64)
        # files of deem < 0.4 do not say; there a one-unit fit on soft labels was the virtual-evidence EM
        self.posterior_ = fitted.get("posterior_", "virtual_evidence" if (
            solvers.get_solver(fitted["solver_"]).one_unit and fitted["soft_labels_"]) else "rbm")
        self.device_ = device
        for name in ("n_classes_", "n_classifiers_", "history_", "soft_labels_", "n_dropped_rows_", "solver_"):
            setattr(self, name, fitted[name])
        if isinstance(self.history_, list):  # a file from before history_ was a dict
            self.history_ = {"loss": self.history_}
        self.n_features_in_ = self.n_classifiers_
        self.class_map_ = None if fitted["class_map_"] is None else np.asarray(fitted["class_map_"], dtype=np.int64)
        if "workers_" in fitted:
            self.workers_ = np.asarray(fitted["workers_"], dtype=object)
            classes = fitted["classes_"]
            is_int = all(isinstance(c, int) for c in classes)
            self.classes_ = np.asarray(classes, dtype=np.int64 if is_int else object)
        self.is_fitted_ = True
        return self

    # ------------------------------------------------------------- helpers
    def _check_hyperparameters(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")

        for name in ("hidden_dim", "cd_k", "epochs", "batch_size", "sampler_steps"):
            positive_int(name)
        if not (float(self.learning_rate) > 0):
            raise ValueError(f"learning_rate must be positive; got {self.learning_rate!r}")
        if not (0.0 <= float(self.momentum) < 1.0):
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}")
        if self.init_method not in INIT_METHODS:
            raise ValueError(f"init_method must be one of {INIT_METHODS}; got {self.init_method!r}")
        if self.solver != "auto":
            solver = solvers.get_solver(self.solver)  # ValueError naming the registered solvers
            if solver.one_unit and self.hidden_dim != 1:
                raise ValueError(f"solver={self.solver!r} needs hidden_dim=1")
        if not (float(self.prior_strength) >= 0):
            raise ValueError(f"prior_strength must be >= 0; got {self.prior_strength!r}")
        check_missing(self.missing)
        check_anchor(self.anchor)
        check_choice("layout", self.layout, LAYOUTS, "'sparse': labels stored as (item, voter, label) triples, "
                     f"memory O(labels); 'auto': sparse when under {SPARSE_BELOW:.4g} of the entries are present")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}; got {self.scheduler!r}")
        self._check_preprocessing()
        auto = self.auto_hyperparameters
        if not isinstance(auto, (bool, np.bool_)):
            if isinstance(auto, str) or not isinstance(auto, (list, tuple, set)):
                raise TypeError("auto_hyperparameters must be a bool or a list of hyperparameter names; "
                                f"got {type(auto).__name__}")
            unknown = sorted(set(auto) - set(PREDICTABLE))
            if unknown:
                raise ValueError(f"auto_hyperparameters names {unknown} cannot be predicted; choose from {PREDICTABLE}")
        if self.model_dir is not None and not auto:
            raise ValueError("model_dir is a predictor bundle for auto_hyperparameters=True; it is unused otherwise")

    def _check_preprocessing(self) -> None:
        if self.preprocessing_activation not in ACTIVATIONS:
            raise ValueError(
                f"preprocessing_activation must be one of {ACTIVATIONS}; got {self.preprocessing_activation!r}")
        if self.preprocessing_init not in PREPROCESSING_INITS:
            raise ValueError(f"preprocessing_init must be one of {PREPROCESSING_INITS}; got {self.preprocessing_init!r}")
        widths = self.preprocessing_layer_widths
        if widths is not None:
            if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or len(widths) == 0:
                raise ValueError(f"preprocessing_layer_widths must be a non-empty list of positive integers; got {widths!r}")
            for w in widths:
                if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
                    raise ValueError(
                        f"preprocessing_layer_widths must hold positive integers; got {widths!r}")
        layers = self.preprocessing_layers
        if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 0:
            raise ValueError(f"preprocessing_layers must be a non-negative integer; got {layers!r}")
        if self.use_preprocessing and widths is None and layers < 1:
            raise ValueError("use_preprocessing=True needs preprocessing_layers >= 1 or preprocessing_layer_widths")
        jitter = self.preprocessing_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float, np.floating, np.integer)) \
                or not (float(jitter) >= 0) or not np.isfinite(float(jitter)):
            raise ValueError(f"preprocessing_jitter must be a finite number >= 0; got {jitter!r}")

    def _resolve_device(self) -> torch.device:
        name = str(self.device)
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]'; got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but no CUDA GPU is available; use device='cpu' or 'auto'")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]'; got {self.device!r}")
        return device

    def _generators(self, device: torch.device):
        if self.random_state is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        elif isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            seed = int(self.random_state)
        else:
            raise TypeError(f"random_state must be an int or None; got {type(self.random_state).__name__}")
        host = torch.Generator().manual_seed(seed)
        dev = torch.Generator(device=device).manual_seed(seed + 1)
        return host, dev

    def _raw_probs(self, data: LabelData) -> torch.Tensor:
        """``(N, K)`` p(consensus class | row) in hidden-state order (hidden unit 0)."""
        chunks = []
        pre = getattr(self, "preprocessor_", None)
        step = _PREDICT_CHUNK
        if is_sparse(data) and pre is None:  # the sparse scores bound their own working set (O(labels + N K))
            step = max(data.n_rows, 1)
        if pre is not None:  # the virtual classifiers' soft labels are K * D_out floats per row
            step = max(1, min(step, (1 << 24) // (self.n_classes_ * max(pre.widths))))
            pre.eval()
        with torch.no_grad():
            for start in range(0, data.n_rows, step):
                part = data if step >= data.n_rows else data.select(slice(start, start + step))
                part = part.to(self.device_)
                if pre is not None:
                    part = pre(part)
                if part.soft and getattr(self, "posterior_", "rbm") == "virtual_evidence":
                    # The virtual-evidence model's own posterior (for one-hot rows it equals the RBM's).
                    rbm = self.model_
                    chunks.append(posterior_soft_evidence(part.values, rbm.W[..., 0].double(),
                                                          rbm.b_h[0].double()).to(rbm.W.dtype))
                    continue
                chunks.append(self.model_.hidden_probs(part)[:, 0, :])
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    def _alignment_against(self, reference: LabelData, comm=None) -> np.ndarray:
        mv = majority_vote(reference)
        predicted = self._raw_probs(reference).argmax(dim=1)
        table = agreement_table(predicted.cpu().numpy(), mv.cpu().numpy(), self.n_classes_)
        if comm is not None:  # the union's table: every rank aligns the same way
            table = comm.sum(torch.as_tensor(table)).numpy()
        return assignment_from_table(table)

    def _apply_map(self, probs: torch.Tensor) -> torch.Tensor:
        if self.class_map_ is None:
            return probs
        aligned = torch.empty_like(probs)
        aligned[:, torch.as_tensor(self.class_map_, device=probs.device)] = probs
        return aligned

    @staticmethod
    def _to_numpy(x):
        return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


# Labels stored sparse are read dense only up to this many (item, voter) cells (1 byte each, int8 labels):
# beyond it the dense matrix, not the labels, would fill the memory.
DENSIFY_LIMIT = 1 << 31


def _densify(data, who: str) -> LabelData:
    """Sparse labels as a dense ``LabelData`` for the dense-only paths, or a ``ValueError`` when too large."""
    cells = data.n_rows * data.n_classifiers
    if cells > DENSIFY_LIMIT:
        raise ValueError(
            f"{who} reads labels dense, and these are {data.n_rows:,} items x {data.n_classifiers:,} voters = "
            f"{cells / 1e9:.1f} G cells for {data.n_labels:,} labels (the limit is {DENSIFY_LIMIT / 1e9:.1f} G, "
            f"deem.estimator.DENSIFY_LIMIT); every solver reads them sparse without preprocessing and with "
            "auto_hyperparameters=False")
    return LabelData(data.to_dense(), False, data.n_classes)


def _overrides(**values) -> dict:
    """``fit``'s per-call ``epochs`` / ``learning_rate`` / ``batch_size`` (``None``: the constructor's), checked."""
    out = {}
    for name, v in values.items():
        if v is None:
            continue
        if name == "learning_rate":
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
                    or v <= 0:
                raise ValueError(f"learning_rate must be a positive number; got {v!r}")
            out[name] = float(v)
        else:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
            out[name] = int(v)
    return out


def _describe(pre: Preprocessor) -> dict:
    first = pre.layers[0]
    return {"widths": pre.widths, "activation": first.activation, "use_softmax": first.use_softmax,
            "one_hot": first.one_hot, "jitter": first.jitter}


def _constructor_defaults() -> dict:
    import inspect

    return {name: p.default for name, p in inspect.signature(DEEM.__init__).parameters.items() if name != "self"}


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and bool(a == b) or (a is None and b is None) or (
            isinstance(a, (int, float)) and isinstance(b, (int, float))
            and not isinstance(a, bool) and not isinstance(b, bool) and float(a) == float(b))
    except Exception:  # arrays and other odd values: user-set
        return False


def _plain(v):
    """A value torch.load(weights_only=True) accepts: no numpy scalars or arrays, no paths."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
