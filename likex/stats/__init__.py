"""The statistics every layer above shares, one module per concern. Derivations, and the
simulations behind every choice (coverage, false-positive rates, power), are in
docs/statistics.md; measured numbers in docs/results.md. numpy, math and torch only (no scipy).

* ``distributions``: Student's t (tail, quantile) and the incomplete beta it rests on;
* ``intervals``: rate intervals under within-sequence correlation (``rate_interval``: the hull
  of Wilson at n/deff and Hall's skew-corrected t, both with the t quantile on k-1 df; a
  sequence-level bound when no target token is seen), the design effect, the check points of a
  stopping rule, and ``fmt_rate``, the one rate format;
* ``significance``: sequence-level two-sample tests (Welch t, permutation), Holm, and the
  enforced minimum samples per side;
* ``power``: the sample size at a stated design effect, its Monte Carlo check, and
  ``PowerAnalysis``, the one power sentence;
* ``kl``: the perplexity floor (the cheapest model with the target rate on average over
  contexts) and the white-box mass statistics (share of KL explained by a tilt on a set,
  logit-mass shift).
"""
