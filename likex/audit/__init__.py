"""Detecting, explaining and measuring an injected token bias: the predicate space
(predicates), the white-box and black-box audits, their samples (sampling), the audits in words
(words), the detection-power benchmark (bench) and what the two commands return (results). The
``likex audit`` command is likex.pipelines.audit."""

from likex.audit.black_box import BlackBoxConfig, BlackBoxResult, black_box_audit
from likex.audit.predicates import Predicate, PredicateIndex
from likex.audit.white_box import WhiteBoxConfig, WhiteBoxResult, white_box_audit

__all__ = [
    "BlackBoxConfig",
    "BlackBoxResult",
    "Predicate",
    "PredicateIndex",
    "WhiteBoxConfig",
    "WhiteBoxResult",
    "black_box_audit",
    "white_box_audit",
]
