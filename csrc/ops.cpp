// Schemas of every DEEM op, declared once. Each device registers its kernels
// with TORCH_LIBRARY_IMPL(deem, CPU|CUDA, m) in csrc/cpu and csrc/cuda.
//
// Shapes: labels (N, D) integer, -1 = missing; v (N, K, D) float soft labels;
// W (K, K, D, H) [visible state, hidden state, classifier, hidden unit];
// b_v (D, K); b_h (H, K); hidden (N, H) int64 hidden states.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing deem._C registers the ops; the module itself holds nothing.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(deem, m) {
  m.def("hidden_logits(Tensor labels, Tensor W, Tensor b_h) -> Tensor");
  m.def("hidden_probs(Tensor labels, Tensor W, Tensor b_h) -> Tensor");
  m.def("hidden_logits_soft(Tensor v, Tensor W, Tensor b_h) -> Tensor");
  m.def("hidden_probs_soft(Tensor v, Tensor W, Tensor b_h) -> Tensor");
  m.def("energy(Tensor labels, Tensor hidden, Tensor W, Tensor b_v, Tensor b_h) -> Tensor");
  m.def("free_energy(Tensor labels, Tensor W, Tensor b_v, Tensor b_h) -> Tensor");
  m.def("free_energy_soft(Tensor v, Tensor W, Tensor b_v, Tensor b_h) -> Tensor");
  // Weighted sufficient statistics: sum_n weight[n] * dF(v_n)/dtheta.
  // Backward of free_energy / free_energy_soft with respect to the parameters.
  m.def("free_energy_backward(Tensor grad, Tensor labels, Tensor W, Tensor b_v, Tensor b_h) -> (Tensor, Tensor, Tensor)");
  m.def("free_energy_soft_backward(Tensor grad, Tensor v, Tensor W, Tensor b_v, Tensor b_h) -> (Tensor, Tensor, Tensor, Tensor)");
  // d/dtheta [mean F(pos) - mean F(neg)], and that loss, in one pass.
  m.def("cd_grad(Tensor pos, Tensor neg, Tensor W, Tensor b_v, Tensor b_h, bool sample_hidden, int seed, int offset) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("cd_grad_soft(Tensor pos, Tensor neg, Tensor W, Tensor b_v, Tensor b_h, bool sample_hidden, int seed, int offset) -> (Tensor, Tensor, Tensor, Tensor)");
  // n_steps Gibbs-with-Gradients Metropolis-Hastings steps on every chain, in place.
  m.def("gwg_steps(Tensor(a!) chains, Tensor W, Tensor b_v, Tensor b_h, int n_steps, int seed, int offset) -> Tensor");
  // n_steps discrete-Langevin (DLP) Metropolis-Hastings steps on every chain, in place:
  // every present coordinate proposes a move at once.
  m.def("dlp_steps(Tensor(a!) chains, Tensor W, Tensor b_v, Tensor b_h, float step_size, int n_steps, int seed, int offset) -> Tensor");
  // One E-step pass of the virtual-evidence Dawid-Skene model on soft labels v (N, K, D):
  // (expected counts (K, K, D) or (0, K, D), class mass (K,), summed NLL, rows with evidence,
  // posterior (N, K) or (0, K)), all float64.
  m.def("soft_evidence_pass(Tensor v, Tensor logp, Tensor logpi, bool want_counts, bool want_posterior) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // One E-step pass of the one-hidden-unit (Dawid-Skene) model on hard labels (N, D), -1 = missing,
  // in float64: per row s[m] = logpi[m] + sum_{i present} logp[x_i, m, i], plus, when log_abstain
  // (D, K) is given (informative missingness; (0, K): ignorable), sum_{i absent} log_abstain[i, m],
  // computed as sum_i log_abstain[i, m] - sum_{i present} log_abstain[i, m] so a row costs O(present
  // labels). Returns (expected counts (K, K, D) of the present labels or (0, K, D), class mass (K,),
  // summed NLL -sum_n logsumexp(s), posterior softmax(s) (N, K) or (0, K)).
  m.def("hard_evidence_pass(Tensor labels, Tensor logp, Tensor logpi, Tensor log_abstain, bool want_counts, bool want_posterior) -> (Tensor, Tensor, Tensor, Tensor)");
  // hard_evidence_pass on labels stored sparse (common/csr.h): by item (row_ptr (N + 1), voter (L),
  // label (L)) for the posteriors, and by voter (col_ptr (D + 1), col_row (L), col_label (L)) for the
  // expected counts on CUDA ((0)-shaped when want_counts is false; the CPU kernel fuses the counts into
  // the by-item pass and does not read it). Same outputs as hard_evidence_pass; a call
  // costs O(labels * K + N * K + D * K * K).
  m.def("csr_evidence_pass(Tensor row_ptr, Tensor voter, Tensor label, Tensor col_ptr, Tensor col_row, Tensor col_label, Tensor logp, Tensor logpi, Tensor log_abstain, bool want_counts, bool want_posterior) -> (Tensor, Tensor, Tensor, Tensor)");
  // The variational step of solver='bayes' between two passes (common/vb.h): from the expected counts
  // (K, K, D), class mass (K) and log prior (2: diag, off; 4: and the rates' vote, abstain, informative,
  // with modelled (D) 0/1 the voters whose abstentions are modelled, else (0)) to the expected logs the
  // next pass reads (elog_p (K, K, D), elog_pi (K), elog_abstain (D, K) or (0, K)), the prior learned
  // by empirical Bayes within [lo, hi] (its log; unchanged unless learn) and the bound's KL at it
  // (0-d; NaN unless want_kl), all float64. O(D * K * K).
  m.def("vb_update(Tensor counts, Tensor mass, Tensor log_prior, Tensor modelled, float class_prior, float lo, float hi, bool learn, bool want_kl) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The two views of csr_evidence_pass from (item, voter, label) triples in any order (counting
  // sort, O(labels + N + D); CPU only: data preparation is host work). Returns (row_ptr, voter,
  // label, col_ptr, col_row, col_label, first duplicate) -- the last a 0-d int64, the input
  // position of a repeated (item, voter) pair or -1; label keeps its dtype.
  m.def("csr_build(Tensor item, Tensor voter, Tensor label, int n_items, int n_voters, int n_classes) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Padded rows ("ELL"): B rows of labels stored sparse, row b's present labels in its S slots --
  // voter (B, S) int64, labels (B, S) integer, a slot with label -1 empty (its voter not read).
  // A row's present voters are distinct and, for the draws of the dense op, ascending. Each op
  // below is its dense namesake on the densified rows X[b, voter[b, s]] = labels[b, s] (D from W),
  // at the cost of the present slots: what the persistent chains of solver='gwg' / 'dlp' and the
  // multi-unit models read when the labels are stored sparse.
  m.def("ell_hidden_probs(Tensor voter, Tensor labels, Tensor W, Tensor b_h) -> Tensor");
  m.def("ell_free_energy(Tensor voter, Tensor labels, Tensor W, Tensor b_v, Tensor b_h) -> Tensor");
  m.def("ell_cd_grad(Tensor pos_voter, Tensor pos, Tensor neg_voter, Tensor neg, Tensor W, Tensor b_v, Tensor b_h, bool sample_hidden, int seed, int offset) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("ell_gwg_steps(Tensor voter, Tensor(a!) chains, Tensor W, Tensor b_v, Tensor b_h, int n_steps, int seed, int offset) -> Tensor");
  m.def("ell_dlp_steps(Tensor voter, Tensor(a!) chains, Tensor W, Tensor b_v, Tensor b_h, float step_size, int n_steps, int seed, int offset) -> Tensor");
  // Exact log Z of the complete-data model (sum over the K^H hidden configurations).
  m.def("log_partition(Tensor W, Tensor b_v, Tensor b_h) -> Tensor");
}
